//! The five capability sets of the user process.
//!
//! The bounding set shrinks first, while the init still has `CAP_SETPCAP`. The user
//! switch then keeps the permitted set through `PR_SET_KEEPCAPS`, and [`apply`] sets the
//! effective, permitted, inheritable and ambient sets last, just before `execve`. A spec
//! without `process.capabilities` gets empty sets, never the init's full set.

use std::collections::HashSet;
use std::str::FromStr;

use caps::{CapSet, Capability, CapsHashSet};
use oci_spec::runtime::{Capabilities, LinuxCapabilities};

use super::{failed, InitError};

/// The capability sets of the spec in the `caps` crate's type.
#[derive(Debug, Default)]
pub(crate) struct CapabilitySets {
    bounding: CapsHashSet,
    effective: CapsHashSet,
    permitted: CapsHashSet,
    inheritable: CapsHashSet,
    ambient: CapsHashSet,
}

impl CapabilitySets {
    /// Converts the spec's sets, rejecting a name the `caps` crate does not know.
    pub fn from_spec(spec: Option<&LinuxCapabilities>) -> Result<CapabilitySets, InitError> {
        let Some(spec) = spec else {
            return Ok(CapabilitySets::default());
        };
        Ok(CapabilitySets {
            bounding: convert("bounding", spec.bounding().as_ref())?,
            effective: convert("effective", spec.effective().as_ref())?,
            permitted: convert("permitted", spec.permitted().as_ref())?,
            inheritable: convert("inheritable", spec.inheritable().as_ref())?,
            ambient: convert("ambient", spec.ambient().as_ref())?,
        })
    }
}

fn convert(set: &str, names: Option<&Capabilities>) -> Result<CapsHashSet, InitError> {
    let mut converted = HashSet::new();
    for capability in names.into_iter().flatten() {
        let name = serde_json::to_value(capability)
            .ok()
            .and_then(|value| value.as_str().map(str::to_owned))
            .unwrap_or_default();
        let parsed = Capability::from_str(&name).map_err(|_| {
            InitError::invalid_spec(format!(
                "process.capabilities.{set}: unknown capability {capability:?}"
            ))
        })?;
        converted.insert(parsed);
    }
    Ok(converted)
}

/// Drops every capability outside the spec's bounding set from the bounding set. Call
/// before the user switch, because dropping needs `CAP_SETPCAP`.
pub(crate) fn drop_bounding(sets: &CapabilitySets) -> Result<(), InitError> {
    let supported = caps::runtime::thread_all_supported();
    for capability in supported.difference(&sets.bounding) {
        caps::drop(None, CapSet::Bounding, *capability).map_err(failed(format_args!(
            "drop {capability} from the bounding set"
        )))?;
    }
    Ok(())
}

/// Keeps the permitted set across the switch from uid 0 to another uid, which would
/// otherwise clear it before [`apply`] can pick the spec's sets from it.
pub(crate) fn keep_across_setuid(keep: bool) -> Result<(), InitError> {
    rustix::thread::set_keep_capabilities(keep)
        .map_err(failed(format_args!("set PR_SET_KEEPCAPS to {keep}")))
}

/// Sets the inheritable, effective, permitted and ambient sets. Inheritable goes first
/// because raising it needs the permitted set the init still has, and effective goes
/// before permitted because it must stay a subset of permitted.
pub(crate) fn apply(sets: &CapabilitySets) -> Result<(), InitError> {
    for (name, set, value) in [
        ("inheritable", CapSet::Inheritable, &sets.inheritable),
        ("effective", CapSet::Effective, &sets.effective),
        ("permitted", CapSet::Permitted, &sets.permitted),
    ] {
        caps::set(None, set, value).map_err(failed(format_args!(
            "set the {name} capabilities to {value:?}"
        )))?;
    }

    caps::clear(None, CapSet::Ambient).map_err(failed("clear the ambient capabilities"))?;
    // The kernel raises an ambient capability only when it is both permitted and
    // inheritable. Specs such as runc's default list ambient capabilities without
    // inheritable ones, and runc skips those too, so they are left out.
    let raisable = sets
        .ambient
        .iter()
        .filter(|capability| sets.inheritable.contains(capability))
        .filter(|capability| sets.permitted.contains(capability));
    for capability in raisable {
        caps::raise(None, CapSet::Ambient, *capability).map_err(failed(format_args!(
            "raise {capability} in the ambient set"
        )))?;
    }
    Ok(())
}
