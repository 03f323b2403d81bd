// SPDX-License-Identifier: Apache-2.0

//! Generates the protobuf messages and the async ttRPC clients and servers
//! from `protos/` into `OUT_DIR`, with the pure-Rust parser so no `protoc`
//! is needed.
//!
//! The generated files open with inner attributes (`#![allow(...)]`), which
//! `include!` rejects, so this script also writes `modules.rs`: one
//! `#[path]` module declaration per generated file, which `src/lib.rs`
//! includes.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

use ttrpc_codegen::{Codegen, Customize, ProtobufCustomize};

const PROTOS: &[&str] = &[
    "protos/agent.proto",
    "protos/csi.proto",
    "protos/health.proto",
    "protos/oci.proto",
    "protos/types.proto",
];

/// Proto files that declare a service, so ttrpc-compiler writes a
/// `<name>_ttrpc.rs` next to the `<name>.rs` messages.
const SERVICES: &[&str] = &["agent", "health"];

fn main() {
    println!("cargo:rerun-if-changed=protos");
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }

    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR for build scripts"));

    generate(&out_dir);

    write_module_list(&out_dir);
}

fn generate(out_dir: &Path) {
    let ttrpc = Customize {
        async_all: true,
        ..Default::default()
    };
    let messages = ProtobufCustomize::default()
        .gen_mod_rs(false)
        .generate_accessors(true);

    let result = Codegen::new()
        .out_dir(out_dir)
        .inputs(PROTOS)
        .include("protos")
        .rust_protobuf()
        .rust_protobuf_customize(messages)
        .customize(ttrpc)
        .run();

    if let Err(error) = result {
        panic!("generating Rust code from {PROTOS:?} failed: {error}");
    }
}

fn write_module_list(out_dir: &Path) {
    let mut modules: Vec<String> = PROTOS
        .iter()
        .map(|proto| {
            Path::new(proto)
                .file_stem()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    modules.extend(SERVICES.iter().map(|service| format!("{service}_ttrpc")));

    let mut text = String::new();
    for module in &modules {
        let file = out_dir.join(format!("{module}.rs"));
        assert!(
            file.is_file(),
            "the generator did not write {}",
            file.display()
        );
        text.push_str(&format!(
            "#[path = {:?}]\npub mod {module};\n",
            file.display().to_string()
        ));
    }

    let list = out_dir.join("modules.rs");
    if let Err(error) = fs::write(&list, text) {
        panic!("writing {} failed: {error}", list.display());
    }
}
