//! Persistent enforcement: pinning what a probe attached in bpffs, adopting
//! what a dead enforcer pinned, replacing another build's pins, and the
//! pinned rule names (crate::pinned has the layout).

use super::hooks::{load_for_later, ARCH_HOOKS, HOOKS, URING_HOOKS};
use super::{error_chain, Globals, LoadError, Probe, OBJECT};
use crate::netns_tag::NetnsAttachment;
use crate::pinned::PinnedScope;
use aya::programs::links::FdLink;
use aya::programs::SkLookup;
use aya::{Btf, Ebpf, EbpfLoader};
use std::path::{Path, PathBuf};

impl Probe {
    /// Takes over what a dead enforcer of this scope pinned: its maps (the
    /// policy in force, the process records, the event ring) are opened
    /// from bpffs, and its programs keep running through their pinned
    /// links; nothing is attached twice.
    pub(super) fn adopt(
        scope: PinnedScope,
        cgroup_path: PathBuf,
        btf: &Btf,
        globals: &Globals,
    ) -> Result<Probe, LoadError> {
        let names = scope.names("maps");
        let mut loader = EbpfLoader::new();
        globals.configure(loader.btf(Some(btf)));
        for name in &names {
            loader.map_pin_path(name.as_str(), scope.map_path(name));
        }
        let mut bpf = loader
            .load(OBJECT)
            .map_err(|e| LoadError::Object(error_chain(&e)))?;
        let sk_lookup = SkLookup::from_pin(scope.program_path("sf_sk_lookup"))
            .map_err(|e| LoadError::Pinned(format!("program sf_sk_lookup: {}", error_chain(&e))))?;
        let attached: Vec<&'static str> = HOOKS
            .iter()
            .chain(ARCH_HOOKS)
            .chain(URING_HOOKS.iter().copied().flatten())
            .map(|h| h.program)
            .filter(|p| scope.program_path(p).exists())
            .collect();
        let namespaces = scope.sk_lookup_namespaces();
        // The 32-bit hook is pinned only once a 32-bit program ran; until
        // then this enforcer defers it as a fresh one does.
        let mut deferred = Vec::new();
        for hook in ARCH_HOOKS {
            if !attached.contains(&hook.program) {
                load_for_later(&mut bpf, hook, btf)?;
                deferred.push(hook);
            }
        }
        let mut probe = Probe {
            bpf,
            cgroup_path,
            attached,
            _links: Vec::new(),
            pins: Some(scope),
            adopted: Some((sk_lookup, namespaces)),
            deferred,
            replacing: None,
            replaced: None,
        };
        if !probe.deferred.is_empty() {
            if probe.counter(crate::abi::COUNTER_COMPAT_EXECS) > 0 {
                // The dead enforcer had not attached it, so the exec came
                // in the gap (or just before it died).
                eprintln!("sockfilter: a 32-bit program was started while no enforcer ran: its accepts and UDP connects until now were not reported");
                probe.attach_deferred()?;
            } else if crate::compat_hook::needed_at_start() {
                probe.attach_deferred()?;
            }
        }
        Ok(probe)
    }

    /// The bpffs directory this probe keeps its enforcement in, when
    /// persistent ([`crate::pinned`]).
    pub fn pin_dir(&self) -> Option<&Path> {
        self.pins.as_ref().map(|p| p.dir())
    }

    /// Whether this probe took over what a dead enforcer pinned (its policy
    /// is in force until the next install).
    pub fn is_adopted(&self) -> bool {
        self.adopted.is_some()
    }

    /// Network namespaces that socket lookup is attached to already (by the
    /// enforcer whose pins were adopted); empty after the first call.
    pub fn take_sk_lookup_namespaces(&mut self) -> Vec<NetnsAttachment> {
        self.adopted
            .as_mut()
            .map_or_else(Vec::new, |(_, ns)| std::mem::take(ns))
    }

    /// Ends persistent enforcement: removes every pin (links are detached)
    /// so that nothing stays behind once this process exits. What a clean
    /// stop (SIGINT, SIGTERM) does; a crash skips it, and the kernel keeps
    /// enforcing. No-op without pins.
    pub fn release_pins(&mut self) {
        if let Some(scope) = self.pins.take() {
            scope.release();
        }
        if let Some((scope, _)) = self.replacing.take() {
            scope.release();
        }
    }

    /// When this probe replaces another build's pinned enforcement (see
    /// [`Probe::replaced_build`]), and once this probe's policy is in force:
    /// removes the other build's pins (its links are detached) and pins this
    /// probe's programs, links (with socket lookup's in `namespaces`) and
    /// maps in their place. Until then both builds' programs run, so every
    /// operation is decided by at least one policy: no gap. No-op otherwise.
    pub fn retire_replaced(
        &mut self,
        namespaces: &mut [&mut NetnsAttachment],
    ) -> Result<(), LoadError> {
        let Some((scope, hash)) = self.replacing.take() else {
            return Ok(());
        };
        scope
            .clear_for_another()
            .map_err(|e| LoadError::Pinned(format!("{}: {e}", scope.dir().display())))?;
        // From here until the state is marked complete, this process's
        // descriptors hold the enforcement: a crash in these milliseconds
        // leaves none (the only gap of an upgrade).
        for a in namespaces.iter_mut() {
            a.pin_in(&scope)
                .map_err(|e| LoadError::Pinned(format!("socket-lookup links: {e}")))?;
        }
        pin_all(&scope, &mut self.bpf, &self.attached, &mut self._links)?;
        self.pins = Some(scope);
        self.replaced = Some(hash);
        Ok(())
    }

    /// The BPF object hash of the other sockfilter build whose pinned
    /// enforcement this probe replaced, once it did.
    pub fn replaced_build(&self) -> Option<&str> {
        self.replaced.as_deref()
    }

    /// Keeps the rule names of both policy slots next to the pinned
    /// enforcement, for an enforcer that adopts it ([`crate::pinned_names`]).
    /// No-op when not persistent.
    pub fn save_rule_names(&self, slots: &[Vec<String>; 2]) -> std::io::Result<()> {
        match &self.pins {
            Some(scope) => crate::pinned_names::save(&scope.map_path(RULE_NAMES), slots),
            None => Ok(()),
        }
    }

    /// The rule names the enforcer whose state was adopted kept.
    pub fn saved_rule_names(&self) -> Option<[Vec<String>; 2]> {
        crate::pinned_names::load(&self.pins.as_ref()?.map_path(RULE_NAMES))
    }
}

/// The pin name of the rule names map (made by user space, not in the
/// object).
const RULE_NAMES: &str = "rule_names";

/// Opens (creating it, and mounting bpffs if needed) and locks the pin
/// directory of the scope of `cgroup`.
pub(super) fn open_pins(cgroup: Option<&Path>) -> Result<PinnedScope, LoadError> {
    let scope = crate::pinned::scope_name(cgroup)
        .map_err(|e| LoadError::Pinned(format!("naming the scope: {e}")))?;
    PinnedScope::lock(&scope).map_err(|e| LoadError::Pinned(e.to_string()))
}

/// Pins every map, every loaded program and every link in `scope`, then
/// marks the state complete (the last step: an enforcer that dies before
/// it leaves a partial state, which the next one clears).
pub(super) fn pin_all(
    scope: &PinnedScope,
    bpf: &mut Ebpf,
    attached: &[&'static str],
    links: &mut Vec<FdLink>,
) -> Result<(), LoadError> {
    let failed =
        |what: String| move |e: aya::pin::PinError| LoadError::Pinned(format!("{what}: {e}"));
    for (name, map) in bpf.maps() {
        if name.contains('.') {
            continue; // global data (.rodata): per load, read by no one else
        }
        map.pin(scope.map_path(name))
            .map_err(failed(format!("map {name}")))?;
    }
    for &name in attached.iter().chain(["sf_sk_lookup"].iter()) {
        if let Some(p) = bpf.program_mut(name) {
            p.pin(scope.program_path(name))
                .map_err(failed(format!("program {name}")))?;
        }
    }
    for (&name, link) in attached.iter().zip(std::mem::take(links)) {
        link.pin(scope.link_path(name))
            .map_err(failed(format!("link of {name}")))?;
    }
    scope
        .mark_complete(&crate::pinned::object_hash(OBJECT))
        .map_err(|e| LoadError::Pinned(format!("marking {}: {e}", scope.dir().display())))
}

/// Pins one program attached after the others were pinned, and its link.
pub(super) fn pin_one(
    scope: &PinnedScope,
    bpf: &mut Ebpf,
    name: &'static str,
    link: FdLink,
) -> Result<(), LoadError> {
    let failed =
        |what: &str, e: aya::pin::PinError| LoadError::Pinned(format!("{what} {name}: {e}"));
    if let Some(p) = bpf.program_mut(name) {
        p.pin(scope.program_path(name))
            .map_err(|e| failed("program", e))?;
    }
    link.pin(scope.link_path(name))
        .map_err(|e| failed("link of", e))?;
    Ok(())
}
