//! `sockfilter enforce`: a policy compiled into BPF maps and enforced by the
//! kernel hooks in `bpf/policy.h`.
//!
//! What each verdict does, per operation:
//! - bind: `bind()` fails with EPERM (in `bind4/6` before the port is taken;
//!   for `bind(port 0)` in `post_bind`, which releases the chosen port).
//! - listen: `listen()` cannot be failed without BPF-LSM; from the moment it
//!   returns, socket lookup refuses every connection to the listener, and
//!   user space destroys it (sock_diag SOCK_DESTROY) within milliseconds.
//! - connect: `connect()` fails with EPERM (TCP and UDP); UDP
//!   `sendto()/sendmsg()` to a denied destination fails with EPERM.
//! - accept: an inbound connection from a denied peer is refused in socket
//!   lookup (the client gets a reset) and never reaches `accept()`.
//! - audit: allowed, and reported with verdict `audit`.
//!
//! The seam for BPF-LSM: on a kernel where `lsm/socket_listen` loads (not
//! this one: lockdown refuses BPF-LSM), a program there could call the same
//! `decide()` (bpf/policy.h) with the listener's address and return -EPERM,
//! making `listen()` itself fail. It would be one more entry in the loader's
//! hook list, probed at start; the sk_lookup refusal and the destroy would
//! then only be needed as a fallback.
//!
//! Policies are double-buffered: every map key carries a slot; a new policy
//! is written to the idle slot and one store to `pol_active` switches over,
//! so at every instant one whole policy is in force.

pub mod agent;
pub mod compile;
pub mod deafen;
pub mod existing;
pub mod listeners;

use crate::abi::policy::*;
use aya::maps::lpm_trie::{Key as LpmKey, LpmTrie};
use aya::maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, PerCpuValues};
use aya::Ebpf;
use compile::{Compiled, Prefix};
use sockfilter_model::policy::Policy;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// Rule names of the policy in each slot, for naming verdicts in events.
#[derive(Debug, Default)]
pub struct RuleNames {
    slots: [Vec<String>; 2],
}

impl RuleNames {
    /// The name of rule `rule` (index + 1, as events carry it) of `slot`;
    /// None for 0 (the default decided).
    pub fn name(&self, slot: u8, rule: u32) -> Option<String> {
        let i = rule.checked_sub(1)? as usize;
        self.slots[(slot & 1) as usize].get(i).cloned()
    }
}

/// Why a policy could not be put in force.
#[derive(Debug, thiserror::Error)]
pub enum EnforceError {
    /// The policy cannot be compiled.
    #[error(transparent)]
    Compile(#[from] compile::CompileError),
    /// A map write failed.
    #[error("writing policy map {map}: {reason}")]
    Map {
        /// Which map.
        map: &'static str,
        /// The kernel's answer.
        reason: String,
    },
}

fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> EnforceError {
    move |e| EnforceError::Map {
        map,
        reason: e.to_string(),
    }
}

/// Keys one installed policy wrote to the hash maps, so the next policy in
/// that slot can remove them.
#[derive(Default)]
struct Installed {
    bitmaps: u32,
    local_ip: Vec<Prefix>,
    remote_ip: Vec<Prefix>,
    exe: Vec<(u32, u64)>,
    comm: Vec<[u8; 16]>,
    uid: Vec<u32>,
    cgroup: Vec<u64>,
    hosts: Vec<SfHostKey>,
    generation: u32,
    rules: usize,
}

/// Time a retired slot is left alone before it is rewritten, so that a BPF
/// program that read the old slot number just before the switch (programs
/// run for microseconds) finishes with consistent maps.
const RETIRE_GRACE: Duration = Duration::from_millis(50);

/// Puts policies in force and reads their counters.
pub struct Enforcer {
    names: Arc<RwLock<RuleNames>>,
    installed: [Option<Installed>; 2],
    /// Slots written by an earlier enforcer (adopted from bpffs): their
    /// keys are not known and are found by walking the maps.
    foreign: [bool; 2],
    active: Option<u32>,
    switched_at: Option<Instant>,
}

impl Default for Enforcer {
    fn default() -> Self {
        Self::new()
    }
}

fn ip_key(slot: u32, p: &Prefix) -> LpmKey<SfIpKeyData> {
    LpmKey::new(
        16 + u32::from(p.bits),
        SfIpKeyData {
            slot: slot as u8,
            tag: p.tag,
            addr: p.addr,
            _pad: [0; 2],
        },
    )
}

fn comm_key(slot: u32, comm: [u8; 16]) -> SfCommKey {
    SfCommKey { slot, comm }
}

fn u64_key(slot: u32, value: u64) -> SfU64Key {
    SfU64Key {
        slot,
        _pad: 0,
        value,
    }
}

macro_rules! map_mut {
    ($bpf:expr, $name:literal, $ty:ty) => {
        <$ty>::try_from($bpf.map_mut($name).ok_or(EnforceError::Map {
            map: $name,
            reason: "missing from the object".into(),
        })?)
        .map_err(map_err($name))?
    };
}

impl Enforcer {
    /// No policy yet (the hooks allow everything until [`Enforcer::install`]).
    pub fn new() -> Self {
        Enforcer {
            names: Arc::new(RwLock::new(RuleNames::default())),
            installed: [None, None],
            foreign: [false, false],
            active: None,
            switched_at: None,
        }
    }

    /// Takes over the policy maps of an earlier enforcer (pinned in bpffs,
    /// see [`crate::pinned`]): its policy stays in force until
    /// [`Enforcer::install`] switches to the idle slot, which is first
    /// emptied of whatever that enforcer left there.
    pub fn adopt(bpf: &Ebpf) -> Result<Self, EnforceError> {
        let map = bpf.map("pol_active").ok_or(EnforceError::Map {
            map: "pol_active",
            reason: "missing from the object".into(),
        })?;
        let active = Array::<&MapData, u32>::try_from(map)
            .map_err(map_err("pol_active"))?
            .get(&0, 0)
            .map_err(map_err("pol_active"))?;
        let mut e = Enforcer::new();
        e.active = Some(active & 1);
        e.foreign = [true, true];
        e.switched_at = Some(Instant::now());
        Ok(e)
    }

    /// The rule names of both slots (to keep them for an adopting
    /// enforcer).
    pub fn name_slots(&self) -> [Vec<String>; 2] {
        self.names
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .slots
            .clone()
    }

    /// Names the rules of the adopted slots, as the enforcer that wrote them
    /// kept them.
    pub fn restore_names(&self, slots: [Vec<String>; 2]) {
        self.names.write().unwrap_or_else(|e| e.into_inner()).slots = slots;
    }

    /// Rule names by slot, shared with the event decoder.
    pub fn rule_names(&self) -> Arc<RwLock<RuleNames>> {
        self.names.clone()
    }

    /// Writes `compiled` (of `policy`) to the idle slot and switches to it.
    /// On error the policy in force stays in force.
    pub fn install(
        &mut self,
        bpf: &mut Ebpf,
        policy: &Policy,
        compiled: &Compiled,
    ) -> Result<(), EnforceError> {
        self.install_with_names(bpf, policy, compiled, &[])
    }

    /// [`Enforcer::install`], and before the switch the addresses of
    /// `names` (learned from DNS answers: namespace inode or 0, address,
    /// name, end of TTL on the boot clock, oldest first) are matched
    /// against the new policy's `remote_host` patterns, so that a name
    /// resolved before a reload still counts under the new policy.
    pub fn install_with_names(
        &mut self,
        bpf: &mut Ebpf,
        policy: &Policy,
        compiled: &Compiled,
        names: &[(u32, [u8; 16], String, u64)],
    ) -> Result<(), EnforceError> {
        let slot = match self.active {
            Some(a) => 1 - a,
            None => 0,
        };
        if let Some(t) = self.switched_at {
            let waited = t.elapsed();
            if waited < RETIRE_GRACE {
                std::thread::sleep(RETIRE_GRACE - waited);
            }
        }
        if let Some(old) = self.installed[slot as usize].take() {
            remove(bpf, slot, &old)?;
        }
        if std::mem::take(&mut self.foreign[slot as usize]) {
            clear_slot(bpf, slot)?;
        }
        let installed = write(bpf, slot, compiled)?;
        if !compiled.hosts.is_empty() {
            refill_names(bpf, slot, installed.generation, compiled, names)?;
        }
        self.installed[slot as usize] = Some(installed);
        self.names.write().unwrap_or_else(|e| e.into_inner()).slots[slot as usize] =
            policy.rules.iter().map(|r| r.name.clone()).collect();
        let mut active = map_mut!(bpf, "pol_active", Array<&mut MapData, u32>);
        active.set(0, slot, 0).map_err(map_err("pol_active"))?;
        self.active = Some(slot);
        self.switched_at = Some(Instant::now());
        Ok(())
    }

    /// Matches per rule of the policy in force, then the default's, summed
    /// over CPUs: `(rule name or None for the default, count)`.
    pub fn hits(&self, bpf: &Ebpf) -> Vec<(Option<String>, u64)> {
        let (Some(slot), Some(map)) = (self.active, bpf.map("pol_hits")) else {
            return Vec::new();
        };
        let Ok(arr) = PerCpuArray::<&MapData, u64>::try_from(map) else {
            return Vec::new();
        };
        let names = self.names.read().unwrap_or_else(|e| e.into_inner());
        let base = slot * (MAX_RULES as u32 + 1);
        let count = |i: u32| arr.get(&(base + i), 0).map(|v| v.iter().sum()).unwrap_or(0);
        let mut out: Vec<(Option<String>, u64)> = names.slots[slot as usize]
            .iter()
            .enumerate()
            .map(|(i, n)| (Some(n.clone()), count(i as u32)))
            .collect();
        out.push((None, count(MAX_RULES as u32)));
        out
    }
}

fn bitmap(words: &[u64]) -> SfBitmap {
    let mut b = SfBitmap {
        summary: [0; SUMMARY],
        words: [0; WORDS],
    };
    for (i, &w) in words.iter().enumerate() {
        b.words[i] = w;
        if w != 0 {
            b.summary[i / 64] |= 1 << (i % 64);
        }
    }
    b
}

fn write(bpf: &mut Ebpf, slot: u32, c: &Compiled) -> Result<Installed, EnforceError> {
    let mut inst = Installed {
        rules: c.rules,
        ..Default::default()
    };
    {
        let mut m = map_mut!(bpf, "pol_bitmaps", BpfHashMap<&mut MapData, SfBitmapKey, SfBitmap>);
        for (id, words) in c.bitmaps.iter().enumerate() {
            let key = SfBitmapKey {
                slot,
                id: id as u32,
            };
            m.insert(key, bitmap(words), 0)
                .map_err(map_err("pol_bitmaps"))?;
        }
        inst.bitmaps = c.bitmaps.len() as u32;
    }
    {
        let mut m = map_mut!(bpf, "pol_kind", Array<&mut MapData, u32>);
        for (i, id) in c.kind.iter().enumerate() {
            m.set(slot * 16 + i as u32, id, 0)
                .map_err(map_err("pol_kind"))?;
        }
    }
    for (name, entries, keep) in [
        ("pol_local_ip", &c.local_ip, &mut inst.local_ip),
        ("pol_remote_ip", &c.remote_ip, &mut inst.remote_ip),
    ] {
        let map = bpf.map_mut(name).ok_or(EnforceError::Map {
            map: "pol_*_ip",
            reason: format!("{name} missing from the object"),
        })?;
        let mut m = LpmTrie::<&mut MapData, SfIpKeyData, u32>::try_from(map)
            .map_err(map_err("pol_*_ip"))?;
        for (p, id) in entries {
            m.insert(&ip_key(slot, p), id, 0)
                .map_err(map_err("pol_*_ip"))?;
            keep.push(*p);
        }
    }
    {
        let mut m = map_mut!(bpf, "pol_ports", Array<&mut MapData, SfPortTable>);
        for (d, table) in [(0u32, &c.local_ports), (1, &c.remote_ports)] {
            let mut t = Box::new(SfPortTable { id: [0; 65536] });
            t.id.copy_from_slice(table);
            m.set(slot * 2 + d, *t, 0).map_err(map_err("pol_ports"))?;
        }
    }
    {
        let mut m = map_mut!(bpf, "pol_exe", BpfHashMap<&mut MapData, SfExeKey, u32>);
        for (path, id) in &c.exe {
            // By the file the path names on this host now; a path that
            // names nothing matches nothing until it does (see Resolved).
            let Some((dev, ino)) = file_identity(path) else {
                continue;
            };
            m.insert(SfExeKey { slot, dev, ino }, id, 0)
                .map_err(map_err("pol_exe"))?;
            inst.exe.push((dev, ino));
        }
    }
    {
        let mut m = map_mut!(bpf, "pol_comm", BpfHashMap<&mut MapData, SfCommKey, u32>);
        for (comm, id) in &c.comm {
            m.insert(comm_key(slot, *comm), id, 0)
                .map_err(map_err("pol_comm"))?;
            inst.comm.push(*comm);
        }
    }
    {
        let mut m = map_mut!(bpf, "pol_uid", BpfHashMap<&mut MapData, SfU64Key, u32>);
        for (uid, id) in &c.uid {
            m.insert(u64_key(slot, u64::from(*uid)), id, 0)
                .map_err(map_err("pol_uid"))?;
            inst.uid.push(*uid);
        }
    }
    {
        let mut m = map_mut!(bpf, "pol_cgroup", BpfHashMap<&mut MapData, SfU64Key, u32>);
        for (cg, id) in &c.cgroup {
            m.insert(u64_key(slot, *cg), id, 0)
                .map_err(map_err("pol_cgroup"))?;
            inst.cgroup.push(*cg);
        }
    }
    {
        let mut m = map_mut!(bpf, "pol_hosts", BpfHashMap<&mut MapData, SfHostKey, u32>);
        for (pattern, id) in &c.hosts {
            let key = SfHostKey::of(slot, pattern);
            m.insert(key, id, 0).map_err(map_err("pol_hosts"))?;
            inst.hosts.push(key);
        }
    }
    {
        let mut m = map_mut!(bpf, "pol_verdicts", Array<&mut MapData, u32>);
        for (i, v) in c.verdicts.iter().enumerate() {
            m.set(slot * MAX_RULES as u32 + i as u32, v, 0)
                .map_err(map_err("pol_verdicts"))?;
        }
    }
    {
        let mut m = map_mut!(bpf, "pol_hits", PerCpuArray<&mut MapData, u64>);
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| EnforceError::Map {
            map: "pol_hits",
            reason: e.to_string(),
        })?;
        let base = slot * (MAX_RULES as u32 + 1);
        for i in (0..c.rules as u32).chain([MAX_RULES as u32]) {
            let zeros =
                PerCpuValues::try_from(vec![0u64; cpus]).map_err(|e| EnforceError::Map {
                    map: "pol_hits",
                    reason: e.to_string(),
                })?;
            m.set(base + i, zeros, 0).map_err(map_err("pol_hits"))?;
        }
    }
    {
        let mut m = map_mut!(bpf, "pol_meta", Array<&mut MapData, SfPolicyMeta>);
        // A generation no earlier policy of either slot had: addresses the
        // kernel matched against an earlier policy's patterns (dns_addrs)
        // do not count for this one.
        let generation = [0, 1]
            .iter()
            .filter_map(|s| m.get(s, 0).ok())
            .map(|old| old.generation)
            .max()
            .unwrap_or(0)
            .wrapping_add(1)
            .max(1);
        let meta = SfPolicyMeta {
            words: c.words as u32,
            rules: c.rules as u32,
            default_verdict: c.default_verdict,
            dims_used: c.dims_used,
            wild: c.wild,
            generation,
            _pad: 0,
        };
        m.set(slot, meta, 0).map_err(map_err("pol_meta"))?;
        inst.generation = generation;
    }
    Ok(inst)
}

/// Enters the names learned before this policy into `dns_addrs` for
/// `slot` (what bpf/dns.h does for each answer from now on).
fn refill_names(
    bpf: &mut Ebpf,
    slot: u32,
    generation: u32,
    c: &Compiled,
    names: &[(u32, [u8; 16], String, u64)],
) -> Result<(), EnforceError> {
    let mut m = map_mut!(bpf, "dns_addrs", BpfHashMap<&mut MapData, SfDnsAddrKey, SfDnsAddr>);
    for (netns, addr, name, expires_ns) in names {
        let Some(id) = compile::host_id(&c.hosts, name) else {
            continue;
        };
        let key = SfDnsAddrKey {
            netns: *netns,
            addr: *addr,
        };
        let mut v = m.get(&key, 0).unwrap_or_default();
        v.id[slot as usize] = id;
        v.generation[slot as usize] = generation;
        v.expires_ns = v.expires_ns.max(*expires_ns);
        m.insert(key, v, 0).map_err(map_err("dns_addrs"))?;
    }
    Ok(())
}

fn remove(bpf: &mut Ebpf, slot: u32, old: &Installed) -> Result<(), EnforceError> {
    {
        let mut m = map_mut!(bpf, "pol_bitmaps", BpfHashMap<&mut MapData, SfBitmapKey, SfBitmap>);
        for id in 0..old.bitmaps {
            let _ = m.remove(&SfBitmapKey { slot, id });
        }
    }
    for (name, entries) in [
        ("pol_local_ip", &old.local_ip),
        ("pol_remote_ip", &old.remote_ip),
    ] {
        if let Some(map) = bpf.map_mut(name) {
            let mut m = LpmTrie::<&mut MapData, SfIpKeyData, u32>::try_from(map)
                .map_err(map_err("pol_*_ip"))?;
            for p in entries {
                let _ = m.remove(&ip_key(slot, p));
            }
        }
    }
    {
        let mut m = map_mut!(bpf, "pol_exe", BpfHashMap<&mut MapData, SfExeKey, u32>);
        for &(dev, ino) in &old.exe {
            let _ = m.remove(&SfExeKey { slot, dev, ino });
        }
    }
    {
        let mut m = map_mut!(bpf, "pol_comm", BpfHashMap<&mut MapData, SfCommKey, u32>);
        for &c in &old.comm {
            let _ = m.remove(&comm_key(slot, c));
        }
    }
    {
        let mut m = map_mut!(bpf, "pol_uid", BpfHashMap<&mut MapData, SfU64Key, u32>);
        for &u in &old.uid {
            let _ = m.remove(&u64_key(slot, u64::from(u)));
        }
    }
    {
        let mut m = map_mut!(bpf, "pol_cgroup", BpfHashMap<&mut MapData, SfU64Key, u32>);
        for &c in &old.cgroup {
            let _ = m.remove(&u64_key(slot, c));
        }
    }
    {
        let mut m = map_mut!(bpf, "pol_hosts", BpfHashMap<&mut MapData, SfHostKey, u32>);
        for k in &old.hosts {
            let _ = m.remove(k);
        }
    }
    let _ = old.rules;
    Ok(())
}

/// The file `path` names on this host (symlinks followed), as the kernel
/// identifies it: (device as the kernel encodes it, inode number).
pub fn file_identity(path: &str) -> Option<(u32, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((crate::abi::kernel_dev(m.dev()), m.ino()))
}

/// Removes every hash-map entry of `slot`, whoever wrote it (the arrays are
/// overwritten whole by [`write()`]).
fn clear_slot(bpf: &mut Ebpf, slot: u32) -> Result<(), EnforceError> {
    macro_rules! clear {
        ($name:literal, $key:ty, $val:ty) => {{
            let mut m = map_mut!(bpf, $name, BpfHashMap<&mut MapData, $key, $val>);
            let keys: Vec<$key> = m.keys().flatten().filter(|k| k.slot == slot).collect();
            for k in keys {
                let _ = m.remove(&k);
            }
        }};
    }
    clear!("pol_bitmaps", SfBitmapKey, SfBitmap);
    clear!("pol_exe", SfExeKey, u32);
    clear!("pol_comm", SfCommKey, u32);
    clear!("pol_uid", SfU64Key, u32);
    clear!("pol_cgroup", SfU64Key, u32);
    clear!("pol_hosts", SfHostKey, u32);
    for name in ["pol_local_ip", "pol_remote_ip"] {
        let map = bpf.map_mut(name).ok_or(EnforceError::Map {
            map: "pol_*_ip",
            reason: format!("{name} missing from the object"),
        })?;
        let mut m = LpmTrie::<&mut MapData, SfIpKeyData, u32>::try_from(map)
            .map_err(map_err("pol_*_ip"))?;
        let keys: Vec<LpmKey<SfIpKeyData>> = m
            .keys()
            .flatten()
            .filter(|k| u32::from(k.data().slot) == slot)
            .collect();
        for k in keys {
            let _ = m.remove(&k);
        }
    }
    Ok(())
}
