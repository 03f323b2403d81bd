// SPDX-License-Identifier: Apache-2.0

//! Agent addresses, shared by the agent (where it listens) and the client
//! (where it connects).
//!
//! Syntax: `vsock://CID:PORT` (CID `-1` means any CID), `unix:///abs/path`,
//! `unix://@name` for an abstract socket, and `hvsock://PATH:PORT` for the
//! host-side Unix socket of a hybrid vsock. [`Address`]'s `Display` writes
//! the same syntax back, so parsing its output gives the same value.

use std::fmt;
use std::num::ParseIntError;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// CID that binds on every CID of the guest (`VMADDR_CID_ANY`), written `-1`.
pub const VSOCK_CID_ANY: u32 = u32::MAX;

/// vsock port the agent listens on unless configured otherwise.
pub const DEFAULT_AGENT_PORT: u32 = 1024;

/// Maximum length of a socket path or abstract name. Linux's `sun_path` is
/// 108 bytes, and one of them ends the path or starts the abstract name.
const MAX_SOCKET_PATH: usize = 107;

/// Endpoint that an agent listens on or a client connects to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    /// A vsock endpoint. `cid` is [`VSOCK_CID_ANY`] for "any CID".
    Vsock { cid: u32, port: u32 },
    /// A Unix socket at an absolute path.
    Unix(PathBuf),
    /// An abstract Unix socket, named without the leading NUL byte.
    UnixAbstract(String),
    /// The host-side Unix socket of a hybrid vsock (Firecracker, Cloud
    /// Hypervisor) and the guest port to ask for after connecting.
    HybridVsock { path: PathBuf, port: u32 },
}

/// Failure to parse an agent address; each variant names the whole address.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AddressError {
    #[error("invalid agent address {address:?}: missing scheme, expected vsock://, unix:// or hvsock://")]
    MissingScheme { address: String },

    #[error("invalid agent address {address:?}: unknown scheme {scheme:?}, expected vsock, unix or hvsock")]
    UnknownScheme { address: String, scheme: String },

    #[error("invalid agent address {address:?}: missing port, expected {expected}")]
    MissingPort {
        address: String,
        expected: &'static str,
    },

    #[error(
        "invalid agent address {address:?}: port {port:?} is not a number from 0 to 4294967295"
    )]
    InvalidPort {
        address: String,
        port: String,
        #[source]
        source: ParseIntError,
    },

    #[error("invalid agent address {address:?}: CID {cid:?} is neither -1 nor a number from 0 to 4294967295")]
    InvalidCid {
        address: String,
        cid: String,
        #[source]
        source: ParseIntError,
    },

    #[error("invalid agent address {address:?}: socket path must be absolute")]
    RelativePath { address: String },

    #[error("invalid agent address {address:?}: abstract socket name is empty")]
    EmptyName { address: String },

    #[error("invalid agent address {address:?}: socket path or name contains a NUL byte")]
    NulByte { address: String },

    #[error("invalid agent address {address:?}: socket path or name is {length} bytes, the maximum is {MAX_SOCKET_PATH}")]
    PathTooLong { address: String, length: usize },
}

impl Default for Address {
    /// Returns the address the agent listens on when none is configured:
    /// `vsock://-1:1024`.
    fn default() -> Self {
        Address::Vsock {
            cid: VSOCK_CID_ANY,
            port: DEFAULT_AGENT_PORT,
        }
    }
}

impl Address {
    /// Formats the address as the string that ttrpc 0.10's `Server::bind`
    /// and `Client::connect` take.
    ///
    /// ttrpc has no hybrid vsock transport, so a [`Address::HybridVsock`]
    /// becomes the `unix://` address of its host socket. The caller must
    /// still send `CONNECT <port>\n` on that socket and read the `OK` line
    /// before it speaks ttRPC.
    pub fn to_ttrpc_string(&self) -> String {
        match self {
            // ttrpc reads the CID as a u32 and also accepts -1, so the
            // numeric form works for every CID.
            Address::Vsock { cid, port } => format!("vsock://{cid}:{port}"),
            Address::Unix(path) => format!("unix://{}", path.display()),
            Address::UnixAbstract(name) => format!("unix://@{name}"),
            Address::HybridVsock { path, .. } => format!("unix://{}", path.display()),
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Vsock { cid, port } if *cid == VSOCK_CID_ANY => write!(f, "vsock://-1:{port}"),
            Address::Vsock { cid, port } => write!(f, "vsock://{cid}:{port}"),
            Address::Unix(path) => write!(f, "unix://{}", path.display()),
            Address::UnixAbstract(name) => write!(f, "unix://@{name}"),
            Address::HybridVsock { path, port } => write!(f, "hvsock://{}:{port}", path.display()),
        }
    }
}

impl FromStr for Address {
    type Err = AddressError;

    fn from_str(address: &str) -> Result<Self, Self::Err> {
        let Some((scheme, rest)) = address.split_once("://") else {
            return Err(AddressError::MissingScheme {
                address: address.to_string(),
            });
        };

        match scheme {
            "vsock" => parse_vsock(address, rest),
            "unix" => parse_unix(address, rest),
            "hvsock" => parse_hybrid_vsock(address, rest),
            _ => Err(AddressError::UnknownScheme {
                address: address.to_string(),
                scheme: scheme.to_string(),
            }),
        }
    }
}

fn parse_vsock(address: &str, rest: &str) -> Result<Address, AddressError> {
    let Some((cid, port)) = rest.split_once(':') else {
        return Err(AddressError::MissingPort {
            address: address.to_string(),
            expected: "vsock://CID:PORT",
        });
    };

    let cid = if cid == "-1" {
        VSOCK_CID_ANY
    } else {
        cid.parse::<u32>()
            .map_err(|source| AddressError::InvalidCid {
                address: address.to_string(),
                cid: cid.to_string(),
                source,
            })?
    };
    let port = parse_port(address, port)?;

    Ok(Address::Vsock { cid, port })
}

fn parse_unix(address: &str, rest: &str) -> Result<Address, AddressError> {
    if let Some(name) = rest.strip_prefix('@') {
        if name.is_empty() {
            return Err(AddressError::EmptyName {
                address: address.to_string(),
            });
        }
        check_socket_name(address, name)?;
        return Ok(Address::UnixAbstract(name.to_string()));
    }

    let path = absolute_socket_path(address, rest)?;
    Ok(Address::Unix(path))
}

fn parse_hybrid_vsock(address: &str, rest: &str) -> Result<Address, AddressError> {
    // The port follows the last colon, so the path may contain colons.
    let Some((path, port)) = rest.rsplit_once(':') else {
        return Err(AddressError::MissingPort {
            address: address.to_string(),
            expected: "hvsock://PATH:PORT",
        });
    };

    let port = parse_port(address, port)?;
    let path = absolute_socket_path(address, path)?;

    Ok(Address::HybridVsock { path, port })
}

fn parse_port(address: &str, port: &str) -> Result<u32, AddressError> {
    if port.is_empty() {
        return Err(AddressError::MissingPort {
            address: address.to_string(),
            expected: "a port after the colon",
        });
    }

    port.parse::<u32>()
        .map_err(|source| AddressError::InvalidPort {
            address: address.to_string(),
            port: port.to_string(),
            source,
        })
}

fn absolute_socket_path(address: &str, path: &str) -> Result<PathBuf, AddressError> {
    if !Path::new(path).is_absolute() {
        return Err(AddressError::RelativePath {
            address: address.to_string(),
        });
    }

    check_socket_name(address, path)?;
    Ok(PathBuf::from(path))
}

fn check_socket_name(address: &str, name: &str) -> Result<(), AddressError> {
    if name.contains('\0') {
        return Err(AddressError::NulByte {
            address: address.to_string(),
        });
    }

    if name.len() > MAX_SOCKET_PATH {
        return Err(AddressError::PathTooLong {
            address: address.to_string(),
            length: name.len(),
        });
    }

    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Address, AddressError> {
        text.parse()
    }

    #[test]
    fn vsock_any_cid() {
        let address = parse("vsock://-1:1024").unwrap();

        assert_eq!(
            address,
            Address::Vsock {
                cid: VSOCK_CID_ANY,
                port: 1024
            }
        );
        assert_eq!(address, Address::default());
        assert_eq!(address.to_string(), "vsock://-1:1024");
        assert_eq!(address.to_ttrpc_string(), "vsock://4294967295:1024");
    }

    #[test]
    fn vsock_numeric_cid() {
        let address = parse("vsock://3:5000").unwrap();

        assert_eq!(address, Address::Vsock { cid: 3, port: 5000 });
        assert_eq!(address.to_string(), "vsock://3:5000");
        assert_eq!(address.to_ttrpc_string(), "vsock://3:5000");
    }

    #[test]
    fn unix_path() {
        let address = parse("unix:///run/berth/agent.sock").unwrap();

        assert_eq!(
            address,
            Address::Unix(PathBuf::from("/run/berth/agent.sock"))
        );
        assert_eq!(address.to_string(), "unix:///run/berth/agent.sock");
        assert_eq!(address.to_ttrpc_string(), "unix:///run/berth/agent.sock");
    }

    #[test]
    fn unix_abstract_name() {
        let address = parse("unix://@berth-agent").unwrap();

        assert_eq!(address, Address::UnixAbstract("berth-agent".to_string()));
        assert_eq!(address.to_string(), "unix://@berth-agent");
        assert_eq!(address.to_ttrpc_string(), "unix://@berth-agent");
    }

    #[test]
    fn hybrid_vsock_path_with_colon() {
        let address = parse("hvsock:///run/vm:1/kata.hvsock:1024").unwrap();

        assert_eq!(
            address,
            Address::HybridVsock {
                path: PathBuf::from("/run/vm:1/kata.hvsock"),
                port: 1024
            }
        );
        assert_eq!(address.to_string(), "hvsock:///run/vm:1/kata.hvsock:1024");
        assert_eq!(address.to_ttrpc_string(), "unix:///run/vm:1/kata.hvsock");
    }

    #[test]
    fn display_round_trips() {
        let addresses = [
            "vsock://-1:1024",
            "vsock://0:1",
            "vsock://4294967294:4294967295",
            "unix:///a",
            "unix://@a b",
            "hvsock:///x/y.sock:2",
        ];

        for text in addresses {
            let address = parse(text).unwrap();
            assert_eq!(address.to_string(), text);
            assert_eq!(parse(&address.to_string()), Ok(address));
        }
    }

    #[test]
    fn vsock_missing_port() {
        let error = parse("vsock://3").unwrap_err();

        assert!(matches!(error, AddressError::MissingPort { .. }), "{error}");
        assert!(error.to_string().contains("\"vsock://3\""), "{error}");
    }

    #[test]
    fn vsock_empty_port() {
        let error = parse("vsock://3:").unwrap_err();

        assert!(matches!(error, AddressError::MissingPort { .. }), "{error}");
    }

    #[test]
    fn vsock_port_not_a_number() {
        let error = parse("vsock://3:http").unwrap_err();

        let AddressError::InvalidPort { address, port, .. } = &error else {
            panic!("expected InvalidPort, got {error:?}");
        };
        assert_eq!(address, "vsock://3:http");
        assert_eq!(port, "http");
    }

    #[test]
    fn vsock_port_out_of_range() {
        let error = parse("vsock://3:4294967296").unwrap_err();

        assert!(matches!(error, AddressError::InvalidPort { .. }), "{error}");
    }

    #[test]
    fn vsock_extra_colon_rejected_as_port() {
        let error = parse("vsock://3:1024:5").unwrap_err();

        assert!(
            matches!(error, AddressError::InvalidPort { ref port, .. } if port == "1024:5"),
            "{error}"
        );
    }

    #[test]
    fn vsock_negative_cid_other_than_any() {
        let error = parse("vsock://-2:1024").unwrap_err();

        assert!(
            matches!(error, AddressError::InvalidCid { ref cid, .. } if cid == "-2"),
            "{error}"
        );
    }

    #[test]
    fn unix_relative_path() {
        let error = parse("unix://run/agent.sock").unwrap_err();

        assert!(
            matches!(error, AddressError::RelativePath { .. }),
            "{error}"
        );
    }

    #[test]
    fn unix_empty_path() {
        let error = parse("unix://").unwrap_err();

        assert!(
            matches!(error, AddressError::RelativePath { .. }),
            "{error}"
        );
    }

    #[test]
    fn unix_empty_abstract_name() {
        let error = parse("unix://@").unwrap_err();

        assert!(matches!(error, AddressError::EmptyName { .. }), "{error}");
    }

    #[test]
    fn unix_path_too_long() {
        let path = format!("/{}", "a".repeat(MAX_SOCKET_PATH));
        let error = parse(&format!("unix://{path}")).unwrap_err();

        assert!(
            matches!(error, AddressError::PathTooLong { length: 108, .. }),
            "{error}"
        );
    }

    #[test]
    fn unix_path_with_nul() {
        let error = parse("unix:///run/a\0b").unwrap_err();

        assert!(matches!(error, AddressError::NulByte { .. }), "{error}");
    }

    #[test]
    fn hybrid_vsock_missing_port() {
        let error = parse("hvsock:///run/kata.hvsock").unwrap_err();

        assert!(matches!(error, AddressError::MissingPort { .. }), "{error}");
    }

    #[test]
    fn hybrid_vsock_relative_path() {
        let error = parse("hvsock://kata.hvsock:1024").unwrap_err();

        assert!(
            matches!(error, AddressError::RelativePath { .. }),
            "{error}"
        );
    }

    #[test]
    fn unknown_scheme() {
        let error = parse("tcp://127.0.0.1:1024").unwrap_err();

        assert_eq!(
            error,
            AddressError::UnknownScheme {
                address: "tcp://127.0.0.1:1024".to_string(),
                scheme: "tcp".to_string()
            }
        );
    }

    #[test]
    fn missing_scheme() {
        let error = parse("/run/agent.sock").unwrap_err();

        assert!(
            matches!(error, AddressError::MissingScheme { .. }),
            "{error}"
        );
    }
}
