//! A minimal rtnetlink client: just the link and address requests that moving a
//! network device into a container needs.
//!
//! A netlink socket talks to the network namespace it was created in, so a socket made
//! by a thread that joined another namespace keeps acting there.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{
    bind, recv, send, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol,
    SockType,
};

const HEADER_LEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;

const RTM_NEWLINK: u16 = 16;
const RTM_NEWADDR: u16 = 20;
const RTM_GETADDR: u16 = 22;

const IFLA_IFNAME: u16 = 3;
const IFLA_NET_NS_FD: u16 = 28;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_FLAGS: u16 = 8;

const IFF_UP: u32 = 0x1;
const IFA_F_PERMANENT: u32 = 0x80;
const RT_SCOPE_UNIVERSE: u8 = 0;

/// An interface address as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Address {
    pub family: u8,
    pub prefix_len: u8,
    pub scope: u8,
    pub flags: u32,
    /// `IFA_LOCAL`, the address of the interface itself on point-to-point links.
    pub local: Option<Vec<u8>>,
    /// `IFA_ADDRESS`, the interface address, or the peer on point-to-point links.
    pub address: Option<Vec<u8>>,
}

impl Address {
    /// Reports whether the runtime spec requires carrying the address over: permanent
    /// and of global scope.
    pub fn is_permanent_global(&self) -> bool {
        self.flags & IFA_F_PERMANENT != 0 && self.scope == RT_SCOPE_UNIVERSE
    }
}

/// A route netlink socket in the calling thread's network namespace.
pub(crate) struct Netlink {
    socket: OwnedFd,
    sequence: u32,
}

impl Netlink {
    pub fn open() -> io::Result<Netlink> {
        let socket = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )?;
        bind(socket.as_raw_fd(), &NetlinkAddr::new(0, 0))?;
        Ok(Netlink {
            socket,
            sequence: 0,
        })
    }

    /// Moves link `index` into the network namespace behind `namespace`, renamed to
    /// `name` there. A name ending in `%d` lets the kernel pick the number.
    pub fn move_link(&mut self, index: u32, namespace: &OwnedFd, name: &str) -> io::Result<()> {
        let mut message = link_message(index, 0, 0);
        let fd = u32::try_from(namespace.as_raw_fd()).map_err(io::Error::other)?;
        push_attribute(&mut message, IFLA_NET_NS_FD, &fd.to_ne_bytes());
        push_attribute(&mut message, IFLA_IFNAME, &nul_terminated(name));
        self.acknowledged(RTM_NEWLINK, 0, message)
    }

    /// Sets link `index` up.
    pub fn set_up(&mut self, index: u32) -> io::Result<()> {
        let message = link_message(index, IFF_UP, IFF_UP);
        self.acknowledged(RTM_NEWLINK, 0, message)
    }

    /// Returns the addresses of link `index`.
    pub fn addresses(&mut self, index: u32) -> io::Result<Vec<Address>> {
        // An ifaddrmsg with family AF_UNSPEC requests every family.
        let request = vec![0u8; 8];
        let sequence = self.send(RTM_GETADDR, NLM_F_DUMP, request)?;

        let mut found = Vec::new();
        loop {
            for (kind, payload) in self.receive(sequence)? {
                match kind {
                    NLMSG_DONE => return Ok(found),
                    RTM_NEWADDR => {
                        if let Some(address) = parse_address(&payload, index) {
                            found.push(address);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// Adds `address` to link `index`.
    pub fn add_address(&mut self, index: u32, address: &Address) -> io::Result<()> {
        let mut message = vec![
            address.family,
            address.prefix_len,
            (address.flags & 0xff) as u8,
            address.scope,
        ];
        message.extend_from_slice(&index.to_ne_bytes());
        if let Some(local) = &address.local {
            push_attribute(&mut message, IFA_LOCAL, local);
        }
        if let Some(peer) = &address.address {
            push_attribute(&mut message, IFA_ADDRESS, peer);
        }
        push_attribute(&mut message, IFA_FLAGS, &address.flags.to_ne_bytes());
        const NLM_F_CREATE: u16 = 0x400;
        const NLM_F_EXCL: u16 = 0x200;
        self.acknowledged(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, message)
    }

    /// Sends a request and waits for the kernel's acknowledgement.
    fn acknowledged(&mut self, kind: u16, flags: u16, payload: Vec<u8>) -> io::Result<()> {
        let sequence = self.send(kind, flags | NLM_F_ACK, payload)?;
        loop {
            for (reply, payload) in self.receive(sequence)? {
                if reply == NLMSG_ERROR {
                    return error_status(&payload);
                }
            }
        }
    }

    fn send(&mut self, kind: u16, flags: u16, payload: Vec<u8>) -> io::Result<u32> {
        self.sequence = self.sequence.wrapping_add(1);
        let length = u32::try_from(HEADER_LEN + payload.len()).map_err(io::Error::other)?;
        let mut message = Vec::with_capacity(HEADER_LEN + payload.len());
        message.extend_from_slice(&length.to_ne_bytes());
        message.extend_from_slice(&kind.to_ne_bytes());
        message.extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        message.extend_from_slice(&self.sequence.to_ne_bytes());
        message.extend_from_slice(&0u32.to_ne_bytes());
        message.extend_from_slice(&payload);

        send(self.socket.as_raw_fd(), &message, MsgFlags::empty())?;
        Ok(self.sequence)
    }

    /// Receives one datagram and returns the messages in it that reply to `sequence`,
    /// as (type, payload) pairs.
    fn receive(&mut self, sequence: u32) -> io::Result<Vec<(u16, Vec<u8>)>> {
        let mut buffer = vec![0u8; 32 * 1024];
        let length = recv(self.socket.as_raw_fd(), &mut buffer, MsgFlags::empty())?;
        let mut data = &buffer[..length];

        let mut messages = Vec::new();
        while data.len() >= HEADER_LEN {
            let total = u32_at(data, 0) as usize;
            if total < HEADER_LEN || total > data.len() {
                return Err(io::Error::other(format!(
                    "netlink message of {total} bytes in a datagram of {} bytes",
                    data.len()
                )));
            }
            let kind = u16::from_ne_bytes([data[4], data[5]]);
            if u32_at(data, 8) == sequence {
                messages.push((kind, data[HEADER_LEN..total].to_vec()));
            }
            data = &data[align(total).min(data.len())..];
        }
        Ok(messages)
    }
}

/// Builds an ifinfomsg for link `index` that sets `flags` within `change`.
fn link_message(index: u32, flags: u32, change: u32) -> Vec<u8> {
    let mut message = vec![0u8; 4];
    message.extend_from_slice(&index.to_ne_bytes());
    message.extend_from_slice(&flags.to_ne_bytes());
    message.extend_from_slice(&change.to_ne_bytes());
    message
}

/// Parses an RTM_NEWADDR payload, keeping it only when it belongs to link `index`.
fn parse_address(payload: &[u8], index: u32) -> Option<Address> {
    if payload.len() < 8 || u32_at(payload, 4) != index {
        return None;
    }
    let mut address = Address {
        family: payload[0],
        prefix_len: payload[1],
        flags: u32::from(payload[2]),
        scope: payload[3],
        local: None,
        address: None,
    };

    let mut attributes = &payload[8..];
    while attributes.len() >= 4 {
        let length = usize::from(u16::from_ne_bytes([attributes[0], attributes[1]]));
        let kind = u16::from_ne_bytes([attributes[2], attributes[3]]);
        if length < 4 || length > attributes.len() {
            break;
        }
        let value = &attributes[4..length];
        match kind {
            IFA_ADDRESS => address.address = Some(value.to_vec()),
            IFA_LOCAL => address.local = Some(value.to_vec()),
            // The 8-bit flags in the header lose the higher ones, which this carries.
            IFA_FLAGS if value.len() == 4 => address.flags = u32_at(value, 0),
            _ => {}
        }
        attributes = &attributes[align(length).min(attributes.len())..];
    }
    Some(address)
}

/// Turns the payload of an NLMSG_ERROR message into a result: error 0 is the
/// acknowledgement.
fn error_status(payload: &[u8]) -> io::Result<()> {
    if payload.len() < 4 {
        return Err(io::Error::other("netlink error message too short"));
    }
    let code = i32::from_ne_bytes([payload[0], payload[1], payload[2], payload[3]]);
    match code {
        0 => Ok(()),
        negative => Err(io::Error::from_raw_os_error(-negative)),
    }
}

fn push_attribute(message: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let length = (4 + value.len()) as u16;
    message.extend_from_slice(&length.to_ne_bytes());
    message.extend_from_slice(&kind.to_ne_bytes());
    message.extend_from_slice(value);
    message.resize(align(message.len()), 0);
}

fn nul_terminated(text: &str) -> Vec<u8> {
    let mut bytes = text.as_bytes().to_vec();
    bytes.push(0);
    bytes
}

fn u32_at(data: &[u8], offset: usize) -> u32 {
    u32::from_ne_bytes([
        data[offset],
        data[offset + 1],
        data[offset + 2],
        data[offset + 3],
    ])
}

/// Rounds up to the 4-byte alignment of netlink messages and attributes.
fn align(length: usize) -> usize {
    (length + 3) & !3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_attributes_are_parsed_with_full_flags() {
        let mut payload = vec![2u8, 24, 0x80, 0];
        payload.extend_from_slice(&7u32.to_ne_bytes());
        push_attribute(&mut payload, IFA_ADDRESS, &[10, 1, 2, 3]);
        push_attribute(&mut payload, IFA_LOCAL, &[10, 1, 2, 3]);
        push_attribute(&mut payload, IFA_FLAGS, &0x280u32.to_ne_bytes());

        let address = parse_address(&payload, 7).unwrap();

        assert_eq!(address.family, 2);
        assert_eq!(address.prefix_len, 24);
        assert_eq!(address.local, Some(vec![10, 1, 2, 3]));
        assert_eq!(address.flags, 0x280);
        assert!(address.is_permanent_global());
        assert_eq!(parse_address(&payload, 8), None);
    }

    #[test]
    fn error_zero_is_acknowledgement() {
        assert!(error_status(&0i32.to_ne_bytes()).is_ok());
        let error = error_status(&(-libc::EEXIST).to_ne_bytes()).unwrap_err();
        assert_eq!(error.raw_os_error(), Some(libc::EEXIST));
    }
}
