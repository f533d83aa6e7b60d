//! The cgroup dimension: cgroups that rules name, and the cgroups where the
//! units and containers that rules name start (`unit` and `container` are
//! functions of the cgroup path, so they compile into this dimension).

use super::bitmaps::{set, Interner};
use super::CompileError;
use sockfilter_model::policy::{cgroup_contains, Policy, Rule};
use sockfilter_model::workload::Workload;

/// The parent of a cgroup path (`/a/b` -> `/a`, `/a` -> `/`).
fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// The cgroups of `tree` (every cgroup of the hierarchy, path and id) where
/// a unit or container that some rule names starts: the cgroup whose
/// parent does not name the same unit and container.
pub fn workload_roots(policy: &Policy, tree: &[(String, u64)]) -> Vec<(String, u64)> {
    let rules: Vec<&Rule> = policy
        .rules
        .iter()
        .filter(|r| r.constrains_workload())
        .collect();
    if rules.is_empty() {
        return Vec::new();
    }
    let mut roots: Vec<(String, u64)> = tree
        .iter()
        .filter(|(path, _)| {
            let w = Workload::of_cgroup(path);
            if w.unit.is_none() && w.container.is_none() {
                return false;
            }
            let up = Workload::of_cgroup(parent(path));
            (up.unit != w.unit || up.container != w.container)
                && rules.iter().any(|r| r.matches_workload(&w))
        })
        .cloned()
        .collect();
    roots.sort();
    roots
}

/// Refuses a container prefix that names more than one container of `tree`.
fn check_container_prefixes(policy: &Policy, tree: &[(String, u64)]) -> Result<(), CompileError> {
    let mut ids: Vec<String> = tree
        .iter()
        .filter_map(|(path, _)| Workload::of_cgroup(path).container.map(|c| c.id))
        .collect();
    ids.sort();
    ids.dedup();
    for r in &policy.rules {
        for prefix in r.container.iter().flatten().filter(|p| p.len() < 64) {
            let hits: Vec<String> = ids
                .iter()
                .filter(|id| id.starts_with(prefix.as_str()))
                .cloned()
                .collect();
            if hits.len() > 1 {
                return Err(CompileError::AmbiguousContainer {
                    rule: r.name.clone(),
                    line: r.line,
                    prefix: prefix.clone(),
                    ids: hits,
                });
            }
        }
    }
    Ok(())
}

/// The cgroups (path, id) that the rules' `cgroup` fields name, in path
/// order; a missing one is refused, as the rule could never match.
fn named_cgroups(
    policy: &Policy,
    cgroup_id: impl Fn(&str) -> Option<u64>,
    cgroup_root: &str,
) -> Result<Vec<(String, u64)>, CompileError> {
    let rules = &policy.rules;
    let mut named: Vec<&str> = rules.iter().filter_map(|r| r.cgroup.as_deref()).collect();
    named.sort_unstable();
    named.dedup();
    named
        .into_iter()
        .map(|path| {
            let id = cgroup_id(path).ok_or_else(|| {
                let r = rules
                    .iter()
                    .find(|r| r.cgroup.as_deref() == Some(path))
                    .unwrap();
                CompileError::NoCgroup {
                    rule: r.name.clone(),
                    line: r.line,
                    path: path.to_string(),
                    root: cgroup_root.to_string(),
                }
            })?;
            Ok((path.to_string(), id))
        })
        .collect()
}

/// The compiled cgroup dimension.
pub(super) struct CgroupDimension {
    /// cgroup id -> bitmap id (`Compiled::cgroup`).
    pub(super) bitmaps: Vec<(u64, u32)>,
    /// Where the units and containers that rules name start
    /// (`Compiled::workload_roots`).
    pub(super) workload_roots: Vec<(String, u64)>,
}

/// The cgroup dimension: every cgroup that a rule names, and every cgroup
/// where a unit or container that a rule names starts, gets the rules that
/// match it; the kernel uses the deepest such ancestor of a process's
/// cgroup.
pub(super) fn cgroup_dimension(
    policy: &Policy,
    cgroup_id: impl Fn(&str) -> Option<u64>,
    tree: &[(String, u64)],
    cgroup_root: &str,
    bm: &mut Interner,
) -> Result<CgroupDimension, CompileError> {
    check_container_prefixes(policy, tree)?;
    let roots = workload_roots(policy, tree);
    let mut entries: Vec<(String, u64)> = roots.clone();
    entries.extend(named_cgroups(policy, cgroup_id, cgroup_root)?);
    entries.sort();
    entries.dedup();
    let mut bitmaps = Vec::new();
    for (path, id) in &entries {
        let workload = Workload::of_cgroup(path);
        let mut bits = bm.empty();
        for (i, r) in policy.rules.iter().enumerate() {
            if r.cgroup.as_deref().is_none_or(|c| cgroup_contains(c, path))
                && r.matches_workload(&workload)
            {
                set(&mut bits, i);
            }
        }
        bitmaps.push((*id, bm.id(&bits)));
    }
    Ok(CgroupDimension {
        bitmaps,
        workload_roots: roots,
    })
}
