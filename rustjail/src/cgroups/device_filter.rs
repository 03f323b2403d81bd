//! Device rules on cgroup v2, which has no devices controller: an eBPF program of type
//! `BPF_PROG_TYPE_CGROUP_DEVICE` attached to the container's cgroup directory.
//!
//! The kernel runs the program on every open and mknod of a device node with a
//! `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }`, where
//! `access_type` is `(access << 16) | type`. The program returns 1 to allow and 0 to
//! deny. The rules keep the v1 meaning, where a later rule overrides an earlier one, so
//! the program tests them from the last to the first and returns at the first match.
//! A request that no rule matches is allowed, as in a v1 cgroup, which starts with its
//! parent's allow-all. A spec that wants a closed list starts with "deny all".

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use crate::error::Error;

/// `type` values of `bpf_cgroup_dev_ctx`.
const DEVICE_BLOCK: i32 = 1;
const DEVICE_CHAR: i32 = 2;

/// Access bits of `bpf_cgroup_dev_ctx`, in the upper half of `access_type`.
const ACCESS_MKNOD: u8 = 1;
const ACCESS_READ: u8 = 2;
const ACCESS_WRITE: u8 = 4;
const ACCESS_ALL: u8 = ACCESS_MKNOD | ACCESS_READ | ACCESS_WRITE;

/// `bpf` commands, program type, attach type and flag from the kernel's UAPI.
const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_PROG_ATTACH: libc::c_int = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
/// Lets the filter sit next to programs that others attached to the same cgroup, such
/// as systemd's. A request then needs every program's consent.
const BPF_F_ALLOW_MULTI: u32 = 2;

/// Size of the buffer for the verifier's explanation of a rejected program.
const VERIFIER_LOG_SIZE: usize = 64 * 1024;

/// One device rule in the form the program tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct DeviceRule {
    pub allow: bool,
    /// [`DEVICE_BLOCK`] or [`DEVICE_CHAR`], or `None` for both.
    pub kind: Option<i32>,
    pub major: Option<i32>,
    pub minor: Option<i32>,
    /// Access bits the rule covers.
    pub access: u8,
}

impl DeviceRule {
    /// Parses a rule in the v1 text form, `c 1:3 rwm`, as `resources` formats it.
    pub fn parse(allow: bool, text: &str) -> Option<DeviceRule> {
        let mut words = text.split_whitespace();
        let kind = match words.next()? {
            "a" => None,
            "b" => Some(DEVICE_BLOCK),
            "c" => Some(DEVICE_CHAR),
            _ => return None,
        };
        let (major, minor) = words.next()?.split_once(':')?;
        let number = |word: &str| match word {
            "*" => Some(None),
            word => word.parse::<i32>().ok().map(Some),
        };
        let mut access = 0;
        for letter in words.next()?.chars() {
            access |= match letter {
                'm' => ACCESS_MKNOD,
                'r' => ACCESS_READ,
                'w' => ACCESS_WRITE,
                _ => return None,
            };
        }
        // A rule of type "a" covers every device whatever numbers it names, as in v1.
        let (major, minor) = match kind {
            None => (None, None),
            Some(_) => (number(major)?, number(minor)?),
        };
        Some(DeviceRule {
            allow,
            kind,
            major,
            minor,
            access,
        })
    }
}

/// One eBPF instruction, laid out as the kernel's `struct bpf_insn`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Instruction {
    code: u8,
    /// Destination register in the low four bits, source register in the high four.
    registers: u8,
    offset: i16,
    immediate: i32,
}

// Opcodes: class | operation | source.
const LOAD_WORD: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const MOVE_REGISTER: u8 = 0xbf; // BPF_ALU64 | BPF_MOV | BPF_X
const MOVE_IMMEDIATE: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
const AND_IMMEDIATE: u8 = 0x57; // BPF_ALU64 | BPF_AND | BPF_K
const SHIFT_RIGHT_IMMEDIATE: u8 = 0x77; // BPF_ALU64 | BPF_RSH | BPF_K
const JUMP_NOT_EQUAL: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const JUMP_EQUAL: u8 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

// Registers: r1 contains the context on entry, r0 the result on exit.
const RESULT: u8 = 0;
const CONTEXT: u8 = 1;
const ACCESS_TYPE: u8 = 2;
const TYPE: u8 = 3;
const ACCESS: u8 = 4;
const MAJOR: u8 = 5;
const MINOR: u8 = 6;
const SCRATCH: u8 = 7;

fn instruction(code: u8, destination: u8, source: u8, offset: i16, immediate: i32) -> Instruction {
    Instruction {
        code,
        registers: (source << 4) | destination,
        offset,
        immediate,
    }
}

/// Builds the program for `rules`, in spec order.
fn program(rules: &[DeviceRule]) -> Vec<Instruction> {
    let mut code = vec![
        instruction(LOAD_WORD, ACCESS_TYPE, CONTEXT, 0, 0),
        instruction(MOVE_REGISTER, TYPE, ACCESS_TYPE, 0, 0),
        instruction(AND_IMMEDIATE, TYPE, 0, 0, 0xffff),
        instruction(MOVE_REGISTER, ACCESS, ACCESS_TYPE, 0, 0),
        instruction(SHIFT_RIGHT_IMMEDIATE, ACCESS, 0, 0, 16),
        instruction(LOAD_WORD, MAJOR, CONTEXT, 4, 0),
        instruction(LOAD_WORD, MINOR, CONTEXT, 8, 0),
    ];
    for rule in rules.iter().rev() {
        code.extend(rule_block(rule));
    }
    code.push(instruction(MOVE_IMMEDIATE, RESULT, 0, 0, 1));
    code.push(instruction(EXIT, 0, 0, 0, 0));
    code
}

/// Returns the instructions that end the program with the rule's verdict when the
/// request matches it, and otherwise fall through to the next block. An allow rule
/// matches when it covers all the requested access, a deny rule when it covers any.
fn rule_block(rule: &DeviceRule) -> Vec<Instruction> {
    // Each jump skips to the end of the block, so its offset is patched once the block's
    // length is known.
    let mut block = Vec::new();
    let mut jumps = Vec::new();
    let mut skip_unless_equal = |block: &mut Vec<Instruction>, register: u8, value: i32| {
        jumps.push(block.len());
        block.push(instruction(JUMP_NOT_EQUAL, register, 0, 0, value));
    };

    if let Some(kind) = rule.kind {
        skip_unless_equal(&mut block, TYPE, kind);
    }
    if let Some(major) = rule.major {
        skip_unless_equal(&mut block, MAJOR, major);
    }
    if let Some(minor) = rule.minor {
        skip_unless_equal(&mut block, MINOR, minor);
    }
    if rule.allow && rule.access != ACCESS_ALL {
        block.push(instruction(MOVE_REGISTER, SCRATCH, ACCESS, 0, 0));
        block.push(instruction(
            AND_IMMEDIATE,
            SCRATCH,
            0,
            0,
            i32::from(ACCESS_ALL & !rule.access),
        ));
        jumps.push(block.len());
        block.push(instruction(JUMP_NOT_EQUAL, SCRATCH, 0, 0, 0));
    } else if !rule.allow {
        block.push(instruction(MOVE_REGISTER, SCRATCH, ACCESS, 0, 0));
        block.push(instruction(
            AND_IMMEDIATE,
            SCRATCH,
            0,
            0,
            i32::from(rule.access),
        ));
        jumps.push(block.len());
        block.push(instruction(JUMP_EQUAL, SCRATCH, 0, 0, 0));
    }
    block.push(instruction(
        MOVE_IMMEDIATE,
        RESULT,
        0,
        0,
        i32::from(rule.allow),
    ));
    block.push(instruction(EXIT, 0, 0, 0, 0));

    let length = block.len();
    for index in jumps {
        block[index].offset = (length - index - 1) as i16;
    }
    block
}

/// Loads the program for `rules` and attaches it to the cgroup v2 `directory`.
pub(super) fn attach(directory: &Path, rules: &[DeviceRule]) -> Result<(), Error> {
    let program = load(&program(rules)).map_err(|source| Error::DeviceFilter {
        operation: "load the device filter for",
        path: directory.to_path_buf(),
        source,
    })?;

    let cgroup = File::open(directory).map_err(|source| Error::DeviceFilter {
        operation: "open",
        path: directory.to_path_buf(),
        source,
    })?;
    // The attachment keeps the program loaded after its descriptor closes here, until the
    // cgroup is removed.
    attach_to_cgroup(&program, &cgroup).map_err(|source| Error::DeviceFilter {
        operation: "attach the device filter to",
        path: directory.to_path_buf(),
        source,
    })
}

/// The `BPF_PROG_LOAD` member of the kernel's `union bpf_attr`, up to `prog_flags`. The
/// kernel reads a shorter attribute as if the rest were zero.
#[repr(C)]
struct ProgramLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
}

/// The `BPF_PROG_ATTACH` member of the kernel's `union bpf_attr`.
#[repr(C)]
struct ProgramAttach {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

fn load(code: &[Instruction]) -> io::Result<OwnedFd> {
    let license = c"Apache-2.0";
    let mut log = vec![0u8; VERIFIER_LOG_SIZE];
    let attribute = ProgramLoad {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: code.len() as u32,
        insns: code.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        kern_version: 0,
        prog_flags: 0,
    };

    // SAFETY: `attribute` is a valid BPF_PROG_LOAD attribute of the size passed, and the
    // instructions, license and log buffer it points to live until the call returns. The
    // kernel writes only into `log`, within `log_size` bytes.
    let result = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &attribute as *const ProgramLoad,
            std::mem::size_of::<ProgramLoad>(),
        )
    };
    if result < 0 {
        let error = io::Error::last_os_error();
        let explanation = String::from_utf8_lossy(&log);
        let explanation = explanation.trim_end_matches('\0').trim();
        if explanation.is_empty() {
            return Err(error);
        }
        return Err(io::Error::new(
            error.kind(),
            format!("{error}; verifier: {explanation}"),
        ));
    }
    // SAFETY: a successful BPF_PROG_LOAD returns a new descriptor, close-on-exec, that
    // nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(result as i32) })
}

fn attach_to_cgroup(program: &OwnedFd, cgroup: &File) -> io::Result<()> {
    let attribute = ProgramAttach {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: program.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        replace_bpf_fd: 0,
    };
    // SAFETY: `attribute` is a valid BPF_PROG_ATTACH attribute of the size passed, and
    // both descriptors it names stay open for the call.
    let result = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_ATTACH,
            &attribute as *const ProgramAttach,
            std::mem::size_of::<ProgramAttach>(),
        )
    };
    if result < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_text_parses_into_rule() {
        let rule = DeviceRule::parse(true, "c 1:3 rw").unwrap();
        let any = DeviceRule::parse(false, "a *:* rwm").unwrap();

        assert_eq!(
            rule,
            DeviceRule {
                allow: true,
                kind: Some(DEVICE_CHAR),
                major: Some(1),
                minor: Some(3),
                access: ACCESS_READ | ACCESS_WRITE,
            }
        );
        assert_eq!((any.kind, any.major, any.access), (None, None, ACCESS_ALL));
        assert_eq!(DeviceRule::parse(true, "x 1:3 r"), None);
    }

    #[test]
    fn rules_are_tested_last_first_with_jumps_to_block_end() {
        let rules = [
            DeviceRule::parse(false, "a *:* rwm").unwrap(),
            DeviceRule::parse(true, "c 1:3 r").unwrap(),
        ];

        let code = program(&rules);

        // The prologue of 7, then the allow block of the last rule: three number tests,
        // the access test in three instructions, verdict and exit.
        let allow = &code[7..15];
        assert_eq!(allow[0].immediate, DEVICE_CHAR);
        assert_eq!(allow[0].offset, 7);
        assert_eq!(allow[6].immediate, 1);
        // Then the deny-all block: the access test only.
        let deny = &code[15..20];
        assert_eq!(deny[2].code, JUMP_EQUAL);
        assert_eq!(deny[2].offset, 2);
        assert_eq!(deny[3].immediate, 0);
        assert_eq!(code.len(), 22);
    }
}
