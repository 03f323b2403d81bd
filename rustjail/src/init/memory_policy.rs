//! The NUMA memory policy of `linux.memoryPolicy`, set with set_mempolicy(2), which
//! neither nix nor rustix wrap. The policy belongs to the thread and survives `execve`
//! and `fork`, so every process of the container that descends from the user process
//! keeps it.

use oci_spec::runtime::{LinuxMemoryPolicy, MemoryPolicyFlagType, MemoryPolicyModeType};

use super::scheduling::parse_list;
use super::InitError;

/// Node numbers accepted in `nodes`, `MAX_NUMNODES` of the largest kernel
/// configuration (`NODES_SHIFT` 10). A kernel built for fewer nodes rejects higher ones
/// with EINVAL.
const MAX_NODES: usize = 1024;

const BITS_PER_WORD: usize = libc::c_ulong::BITS as usize;

/// Modes newer than the libc crate's constants, from `linux/mempolicy.h`.
const MPOL_PREFERRED_MANY: libc::c_int = 5;
const MPOL_WEIGHTED_INTERLEAVE: libc::c_int = 6;

/// A checked memory policy, ready to apply.
#[derive(Debug)]
pub(crate) struct MemoryPolicy {
    /// The spec's policy in words, for messages.
    text: String,
    /// Mode and flags, the first argument of set_mempolicy(2).
    mode: libc::c_int,
    /// Node mask, one bit per node, empty without nodes.
    mask: Vec<libc::c_ulong>,
}

impl MemoryPolicy {
    /// Checks `spec` and builds the node mask. Combinations the kernel would reject for
    /// a plain reason are rejected here with that reason.
    pub(crate) fn from_spec(spec: &LinuxMemoryPolicy) -> Result<MemoryPolicy, InitError> {
        let nodes_text = spec.nodes().as_deref().unwrap_or("");
        let flags = spec.flags().clone().unwrap_or_default();
        let text = format!("{} nodes {nodes_text:?} flags {flags:?}", spec.mode());
        let invalid =
            |reason: &str| InitError::invalid_spec(format!("linux.memoryPolicy {text}: {reason}"));

        let nodes = if nodes_text.is_empty() {
            Vec::new()
        } else {
            parse_list("linux.memoryPolicy.nodes", nodes_text, MAX_NODES)
                .map_err(InitError::invalid_spec)?
        };
        let mode = spec.mode();
        match mode {
            MemoryPolicyModeType::MpolDefault | MemoryPolicyModeType::MpolLocal
                if !nodes.is_empty() =>
            {
                return Err(invalid("MPOL_DEFAULT and MPOL_LOCAL take no nodes"));
            }
            MemoryPolicyModeType::MpolBind
            | MemoryPolicyModeType::MpolInterleave
            | MemoryPolicyModeType::MpolWeightedInterleave
            | MemoryPolicyModeType::MpolPreferredMany
                if nodes.is_empty() =>
            {
                return Err(invalid("this mode needs at least one node"));
            }
            _ => {}
        }
        if mode == MemoryPolicyModeType::MpolDefault && !flags.is_empty() {
            return Err(invalid("MPOL_DEFAULT takes no flags"));
        }
        if flags.contains(&MemoryPolicyFlagType::MpolFStaticNodes)
            && flags.contains(&MemoryPolicyFlagType::MpolFRelativeNodes)
        {
            return Err(invalid(
                "MPOL_F_STATIC_NODES and MPOL_F_RELATIVE_NODES exclude each other",
            ));
        }

        let mut mask = Vec::new();
        if let Some(highest) = nodes.iter().max() {
            mask = vec![0; highest / BITS_PER_WORD + 1];
            for node in &nodes {
                mask[node / BITS_PER_WORD] |= 1 << (node % BITS_PER_WORD);
            }
        }
        let mode = flags
            .iter()
            .fold(mode_number(mode), |all, flag| all | flag_bits(*flag));
        Ok(MemoryPolicy { text, mode, mask })
    }

    /// Sets the policy of this thread, the only one of the init.
    pub(crate) fn apply(&self) -> Result<(), InitError> {
        let (mask, max_node) = if self.mask.is_empty() {
            (std::ptr::null(), 0)
        } else {
            // The kernel reads max_node - 1 bits, a quirk kept for old callers.
            (self.mask.as_ptr(), self.mask.len() * BITS_PER_WORD + 1)
        };
        // SAFETY: mask is null with max_node 0, or points to self.mask, whose words hold
        // at least max_node - 1 bits, the number the kernel reads. The kernel only reads it.
        let result = unsafe {
            libc::syscall(
                libc::SYS_set_mempolicy,
                self.mode,
                mask,
                max_node as libc::c_ulong,
            )
        };
        if result == 0 {
            return Ok(());
        }

        let source = std::io::Error::last_os_error();
        match source.raw_os_error() {
            Some(libc::EINVAL) => Err(InitError::invalid_spec(format!(
                "linux.memoryPolicy {}: the kernel rejects it, for example because a node \
                 is offline or outside the container's cpuset.mems: {source}",
                self.text
            ))),
            Some(libc::ENOSYS) => Err(InitError::system(format!(
                "set linux.memoryPolicy {}: the kernel has no NUMA support: {source}",
                self.text
            ))),
            _ => Err(InitError::system(format!(
                "set linux.memoryPolicy {}: {source}",
                self.text
            ))),
        }
    }
}

fn mode_number(mode: MemoryPolicyModeType) -> libc::c_int {
    match mode {
        MemoryPolicyModeType::MpolDefault => libc::MPOL_DEFAULT,
        MemoryPolicyModeType::MpolBind => libc::MPOL_BIND,
        MemoryPolicyModeType::MpolInterleave => libc::MPOL_INTERLEAVE,
        MemoryPolicyModeType::MpolWeightedInterleave => MPOL_WEIGHTED_INTERLEAVE,
        MemoryPolicyModeType::MpolPreferred => libc::MPOL_PREFERRED,
        MemoryPolicyModeType::MpolPreferredMany => MPOL_PREFERRED_MANY,
        MemoryPolicyModeType::MpolLocal => libc::MPOL_LOCAL,
    }
}

fn flag_bits(flag: MemoryPolicyFlagType) -> libc::c_int {
    match flag {
        MemoryPolicyFlagType::MpolFNumaBalancing => libc::MPOL_F_NUMA_BALANCING,
        MemoryPolicyFlagType::MpolFRelativeNodes => libc::MPOL_F_RELATIVE_NODES,
        MemoryPolicyFlagType::MpolFStaticNodes => libc::MPOL_F_STATIC_NODES,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(mode: MemoryPolicyModeType, nodes: &str) -> LinuxMemoryPolicy {
        let mut policy = LinuxMemoryPolicy::default();
        policy.set_mode(mode);
        policy.set_nodes(Some(nodes.to_owned()));
        policy
    }

    #[test]
    fn nodes_become_mask_bits() {
        let checked =
            MemoryPolicy::from_spec(&policy(MemoryPolicyModeType::MpolBind, "0,2,65")).unwrap();

        assert_eq!(checked.mode, libc::MPOL_BIND);
        assert_eq!(checked.mask, [0b101, 0b10]);
    }

    #[test]
    fn bind_without_nodes_is_invalid() {
        let error =
            MemoryPolicy::from_spec(&policy(MemoryPolicyModeType::MpolBind, "")).unwrap_err();

        assert!(error.message.contains("linux.memoryPolicy"), "{error:?}");
    }

    #[test]
    fn local_with_nodes_is_invalid() {
        let error =
            MemoryPolicy::from_spec(&policy(MemoryPolicyModeType::MpolLocal, "0")).unwrap_err();

        assert!(error.message.contains("MPOL_LOCAL"), "{error:?}");
    }
}
