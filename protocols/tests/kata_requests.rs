// SPDX-License-Identifier: Apache-2.0

//! Loads every request that a Kata Containers shim sent in the shared case
//! directory into its protobuf message, with unknown fields rejected, so a
//! difference between our `.proto` files and Kata's fails here. The message
//! type is the file name up to the first `-`.

use std::fs;
use std::path::{Path, PathBuf};

use protocols::agent::{self, CreateContainerRequest};
use protocols::{parse_message, spec_from_oci, spec_to_oci, ConvertError};

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/cases/kata-requests")
}

fn case_files() -> Vec<PathBuf> {
    let dir = cases_dir();
    let entries = fs::read_dir(&dir).unwrap_or_else(|error| {
        panic!(
            "cannot read the Kata request cases at {}: {error}; the directory must sit beside the repository",
            dir.display()
        )
    });

    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("reading a directory entry").path())
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "json")
        })
        .collect();
    files.sort();

    assert!(
        !files.is_empty(),
        "no .json request cases in {}",
        dir.display()
    );
    files
}

fn message_name(path: &Path) -> String {
    let file_name = path.file_name().unwrap().to_string_lossy();
    let (name, _) = file_name.split_once('-').unwrap_or_else(|| {
        panic!("{file_name}: the name must start with the message type and a '-'")
    });
    name.to_string()
}

#[test]
fn every_case_parses_into_its_message() {
    let mut failures = Vec::new();

    for path in case_files() {
        let name = message_name(&path);
        let Some(descriptor) = agent::file_descriptor().message_by_package_relative_name(&name)
        else {
            failures.push(format!(
                "{}: no message grpc.{name} in agent.proto",
                path.display()
            ));
            continue;
        };

        let json = fs::read_to_string(&path).unwrap();
        if let Err(error) = parse_message(&json, &descriptor) {
            failures.push(format!("{}: {error}", path.display()));
        }
    }

    assert!(
        failures.is_empty(),
        "cases that did not parse:\n{}",
        failures.join("\n")
    );
}

#[test]
fn create_container_specs_convert_to_oci() {
    let mut converted = 0;
    let mut placeholders = 0;

    for path in case_files() {
        if message_name(&path) != "CreateContainerRequest" {
            continue;
        }

        let json = fs::read_to_string(&path).unwrap();
        let request: CreateContainerRequest = protocols::parse_request(&json)
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        let spec = request
            .OCI
            .as_ref()
            .unwrap_or_else(|| panic!("{}: request carries no OCI spec", path.display()));

        // Some cases come from Kata's policy generator and still hold a
        // template placeholder such as "$(default_caps)" where a capability
        // list belongs. That is not a valid spec, so the conversion must
        // reject it and name the placeholder.
        if json.contains("\"$(") {
            let error = spec_to_oci(spec).expect_err("a placeholder must not convert");
            let ConvertError::UnknownName { value, .. } = &error else {
                panic!("{}: expected UnknownName, got {error:?}", path.display());
            };
            assert!(value.starts_with("$("), "{}: {error}", path.display());
            placeholders += 1;
            continue;
        }

        let oci = spec_to_oci(spec).unwrap_or_else(|error| panic!("{}: {error}", path.display()));

        // The conversion must keep what the container runs and where.
        let process = oci.process().as_ref().expect("every case has a process");
        assert_eq!(
            process.args().as_deref(),
            Some(spec.Process.Args.as_slice()),
            "{}",
            path.display()
        );
        assert_eq!(
            oci.hostname().as_deref().unwrap_or(""),
            spec.Hostname,
            "{}",
            path.display()
        );
        assert_eq!(
            oci.linux()
                .as_ref()
                .and_then(|linux| linux.namespaces().as_ref())
                .map(Vec::len)
                .unwrap_or(0),
            spec.Linux.Namespaces.len(),
            "{}",
            path.display()
        );

        // Converting back reaches a fixed point after one round, because
        // the first conversion only drops default-valued messages.
        let back = spec_from_oci(&oci);
        assert_eq!(spec_to_oci(&back).unwrap(), oci, "{}", path.display());

        converted += 1;
    }

    assert!(
        converted > 0,
        "no CreateContainerRequest case in {}",
        cases_dir().display()
    );
    eprintln!("{converted} specs converted, {placeholders} rejected for a template placeholder");
}

#[test]
fn unknown_field_in_case_is_rejected() {
    let path = case_files()
        .into_iter()
        .find(|path| message_name(path) == "CreateContainerRequest")
        .expect("a CreateContainerRequest case");
    let json = fs::read_to_string(&path).unwrap();

    let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
    value["OCI"]["Linux"]["NotAField"] = serde_json::Value::Bool(true);

    let error = protocols::parse_request::<CreateContainerRequest>(&value.to_string()).unwrap_err();

    assert!(error.to_string().contains("\"NotAField\""), "{error}");
    assert!(error.to_string().contains("OCI.Linux"), "{error}");
}
