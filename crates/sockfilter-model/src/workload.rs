//! What a cgroup v2 path says about the process in it: the systemd unit it
//! runs in, the container it belongs to, the Kubernetes pod.
//!
//! Only the layouts that the managers themselves create are recognised:
//!
//! | manager | cgroup of a container or pod |
//! |---|---|
//! | systemd | `/system.slice/nginx.service`, `/user.slice/user-1000.slice/session-2.scope` |
//! | docker, systemd driver | `/system.slice/docker-<id>.scope` |
//! | docker, cgroupfs driver | `/docker/<id>` |
//! | podman, systemd driver | `/machine.slice/libpod-<id>.scope` (crun adds `/container`) |
//! | podman, cgroupfs driver | `/libpod_parent/libpod-<id>` |
//! | kubelet, systemd driver | `/kubepods.slice[/kubepods-<qos>.slice]/kubepods[-<qos>]-pod<uid, '-' as '_'>.slice/` then `cri-containerd-<id>.scope` (containerd), `crio-<id>.scope` (cri-o) or `docker-<id>.scope` (cri-dockerd) |
//! | kubelet, cgroupfs driver | `/kubepods[/<qos>]/pod<uid>/` then `<id>` (containerd) or `crio-<id>` (cri-o) |
//!
//! where `<id>` is 64 lowercase hex digits, `<qos>` is `besteffort` or
//! `burstable`, and `<uid>` a pod UID (a UUID, or 32 hex digits for static
//! pods); kubelet's `--cgroup-root` may put anything before `kubepods`.
//!
//! **Trust.** A name is believed only where no unprivileged process can
//! have chosen it. systemd delegates cgroup subtrees only inside units (a
//! user's `user@1000.service`, a container's scope), so every component
//! after the first unit may be named by whoever the unit was delegated to.
//! The unit is therefore the *first* `.service` or `.scope` component, as
//! systemd's `cg_path_get_unit` reads it (a user's own units inside
//! `user@1000.service` are reported as `user@1000.service`), and containers
//! and pods are read only from the components up to that one. Rootless
//! containers (under a user's systemd instance) are thus not reported as
//! containers: their owner names their cgroups.

use serde_json::{json, Value};

/// A container runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Runtime {
    /// Docker (moby), also under Kubernetes through cri-dockerd.
    Docker,
    /// Podman (libpod).
    Podman,
    /// containerd's CRI plugin (Kubernetes).
    Containerd,
    /// CRI-O (Kubernetes).
    CriO,
}

impl Runtime {
    /// The contract name: `docker`, `podman`, `containerd`, `cri-o`.
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Docker => "docker",
            Runtime::Podman => "podman",
            Runtime::Containerd => "containerd",
            Runtime::CriO => "cri-o",
        }
    }
}

/// A container: its runtime and its 64-hex-digit id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Container {
    /// The runtime that created it.
    pub runtime: Runtime,
    /// The full container id (64 lowercase hex digits).
    pub id: String,
}

impl Container {
    /// `{"runtime": "docker", "id": "<64 hex>"}`.
    pub fn to_json(&self) -> Value {
        json!({ "runtime": self.runtime.as_str(), "id": self.id })
    }
}

/// What a cgroup path says about its processes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Workload {
    /// The systemd unit (service or scope), e.g. `nginx.service`.
    pub unit: Option<String>,
    /// The container.
    pub container: Option<Container>,
    /// The Kubernetes pod's UID, with dashes.
    pub pod_uid: Option<String>,
}

impl Workload {
    /// Reads a cgroup v2 path as `/proc/PID/cgroup` shows it.
    ///
    /// ```
    /// use sockfilter_model::workload::{Runtime, Workload};
    /// let w = Workload::of_cgroup(
    ///     "/system.slice/docker-3f2a4c9d8e7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a1f.scope",
    /// );
    /// assert_eq!(w.container.unwrap().runtime, Runtime::Docker);
    /// assert!(w.unit.unwrap().starts_with("docker-3f2a"));
    /// assert_eq!(Workload::of_cgroup("/system.slice/nginx.service").unit.as_deref(), Some("nginx.service"));
    /// ```
    pub fn of_cgroup(path: &str) -> Workload {
        let parts: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        // Everything after the first unit may be named by its delegate.
        let first_unit = parts.iter().position(|c| is_unit(c));
        let trusted = &parts[..first_unit.map_or(parts.len(), |i| i + 1)];
        Workload {
            unit: first_unit.map(|i| parts[i].to_string()),
            container: (0..trusted.len()).find_map(|i| container_at(trusted, i)),
            pod_uid: (0..trusted.len()).find_map(|i| pod_at(trusted, i)),
        }
    }

    /// Whether nothing is known.
    pub fn is_empty(&self) -> bool {
        self.unit.is_none() && self.container.is_none() && self.pod_uid.is_none()
    }
}

/// Whether `c` names a systemd unit that holds processes: `NAME.service`
/// or `NAME.scope`, NAME made of the characters systemd allows in unit
/// names.
pub fn is_unit(c: &str) -> bool {
    let Some(name) = c
        .strip_suffix(".service")
        .or_else(|| c.strip_suffix(".scope"))
    else {
        return false;
    };
    !name.is_empty()
        && c.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b":-_.\\@".contains(&b))
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The container whose cgroup is component `i` of `parts`, if it is one.
fn container_at(parts: &[&str], i: usize) -> Option<Container> {
    let c = parts[i];
    let id_after = |prefix: &str, suffix: &str| {
        c.strip_prefix(prefix)
            .and_then(|r| r.strip_suffix(suffix))
            .filter(|id| is_hex(id, 64))
    };
    let parent = i.checked_sub(1).map(|p| parts[p]);
    let (runtime, id) = if let Some(id) = id_after("docker-", ".scope") {
        (Runtime::Docker, id)
    } else if let Some(id) = id_after("libpod-", ".scope") {
        (Runtime::Podman, id)
    } else if let Some(id) = id_after("cri-containerd-", ".scope") {
        (Runtime::Containerd, id)
    } else if let Some(id) = id_after("crio-", ".scope") {
        (Runtime::CriO, id)
    } else if let Some(id) = id_after("crio-", "") {
        (Runtime::CriO, id)
    } else if let Some(id) = id_after("libpod-", "") {
        (Runtime::Podman, id)
    } else if is_hex(c, 64) && parent == Some("docker") {
        (Runtime::Docker, c)
    } else if is_hex(c, 64) && i >= 1 && pod_at(parts, i - 1).is_some() {
        (Runtime::Containerd, c)
    } else {
        return None;
    };
    Some(Container {
        runtime,
        id: id.to_string(),
    })
}

/// The pod UID if component `i` of `parts` is a kubelet pod cgroup.
fn pod_at(parts: &[&str], i: usize) -> Option<String> {
    let c = parts[i];
    let before = &parts[..i];
    // cgroupfs driver: .../kubepods[/besteffort|/burstable]/pod<uid>
    if let Some(uid) = c.strip_prefix("pod") {
        let under_kubepods = matches!(
            before,
            [.., "kubepods"] | [.., "kubepods", "besteffort" | "burstable"]
        );
        return (under_kubepods && is_pod_uid(uid)).then(|| uid.to_string());
    }
    // systemd driver: .../kubepods.slice[/kubepods-<qos>.slice]/kubepods[-<qos>]-pod<uid>.slice
    let name = c.strip_suffix(".slice")?;
    let (qos, uid) = if let Some(uid) = name.strip_prefix("kubepods-pod") {
        (None, uid)
    } else if let Some(uid) = name.strip_prefix("kubepods-besteffort-pod") {
        (Some("kubepods-besteffort.slice"), uid)
    } else if let Some(uid) = name.strip_prefix("kubepods-burstable-pod") {
        (Some("kubepods-burstable.slice"), uid)
    } else {
        return None;
    };
    let parent_ok = match (qos, before) {
        (None, [.., "kubepods.slice"]) => true,
        (Some(q), [.., "kubepods.slice", p]) => *p == q,
        _ => false,
    };
    // systemd escapes the UID's dashes as underscores (a dash means nesting).
    let uid = uid.replace('_', "-");
    (parent_ok && is_pod_uid(&uid)).then_some(uid)
}

/// A pod UID: a UUID (lowercase, with dashes) or, for static pods, 32 hex digits.
fn is_pod_uid(s: &str) -> bool {
    if is_hex(s, 32) {
        return true;
    }
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => matches!(b, b'0'..=b'9' | b'a'..=b'f'),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f2a4c9d8e7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a1f";
    const UID: &str = "9c1e6f3a-2b4d-4e8f-a1b2-c3d4e5f60718";

    fn w(path: &str) -> Workload {
        Workload::of_cgroup(path)
    }

    fn container(runtime: Runtime) -> Option<Container> {
        Some(Container {
            runtime,
            id: ID.into(),
        })
    }

    #[test]
    fn systemd_units() {
        assert_eq!(
            w("/system.slice/nginx.service").unit.as_deref(),
            Some("nginx.service")
        );
        assert_eq!(
            w("/system.slice/system-getty.slice/getty@tty1.service")
                .unit
                .as_deref(),
            Some("getty@tty1.service")
        );
        assert_eq!(
            w("/user.slice/user-1000.slice/session-2.scope")
                .unit
                .as_deref(),
            Some("session-2.scope")
        );
        // A sub-cgroup of a unit belongs to the unit.
        assert_eq!(
            w("/system.slice/containerd.service/sub").unit.as_deref(),
            Some("containerd.service")
        );
        assert_eq!(w("/"), Workload::default());
        assert_eq!(w("/system.slice"), Workload::default());
        assert_eq!(w("/init.scope").unit.as_deref(), Some("init.scope"));
        assert!(w("/system.slice/.service").unit.is_none());
        assert!(w("/system.slice/a b.service").unit.is_none());
    }

    #[test]
    fn a_users_own_units_are_their_manager() {
        let x = w("/user.slice/user-1000.slice/user@1000.service/app.slice/nginx.service");
        assert_eq!(x.unit.as_deref(), Some("user@1000.service"));
        // A rootless container's cgroup is named by its user: not believed.
        let r = w(&format!(
            "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container"
        ));
        assert_eq!(
            (r.unit.as_deref(), r.container),
            (Some("user@1000.service"), None)
        );
    }

    #[test]
    fn docker_both_drivers() {
        let s = w(&format!("/system.slice/docker-{ID}.scope"));
        assert_eq!(s.container, container(Runtime::Docker));
        assert_eq!(s.unit, Some(format!("docker-{ID}.scope")));
        let c = w(&format!("/docker/{ID}"));
        assert_eq!(c.container, container(Runtime::Docker));
        assert_eq!(c.unit, None);
        // The outermost container wins (docker in docker).
        let other = "a".repeat(64);
        assert_eq!(
            w(&format!("/docker/{ID}/docker/{other}")).container,
            container(Runtime::Docker)
        );
        // Not a container: a short id, upper case, a bare id elsewhere.
        assert_eq!(w("/docker/3f2a4c9d8e7b").container, None);
        assert_eq!(w(&format!("/docker/{}", ID.to_uppercase())).container, None);
        assert_eq!(w(&format!("/other/{ID}")).container, None);
    }

    #[test]
    fn podman_both_drivers_and_not_conmon() {
        assert_eq!(
            w(&format!("/machine.slice/libpod-{ID}.scope/container")).container,
            container(Runtime::Podman)
        );
        assert_eq!(
            w(&format!("/libpod_parent/libpod-{ID}")).container,
            container(Runtime::Podman)
        );
        assert_eq!(
            w(&format!("/machine.slice/libpod-conmon-{ID}.scope")).container,
            None
        );
    }

    #[test]
    fn kubelet_systemd_driver() {
        let u = UID.replace('-', "_");
        for (runtime, scope) in [
            (Runtime::Containerd, format!("cri-containerd-{ID}.scope")),
            (Runtime::CriO, format!("crio-{ID}.scope")),
            (Runtime::Docker, format!("docker-{ID}.scope")),
        ] {
            for pod in [
                format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice"),
                format!(
                    "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u}.slice"
                ),
                format!("/kubepods.slice/kubepods-pod{u}.slice"),
            ] {
                let x = w(&format!("{pod}/{scope}"));
                assert_eq!(x.pod_uid.as_deref(), Some(UID), "{pod}");
                assert_eq!(x.container, container(runtime), "{pod}/{scope}");
                assert_eq!(x.unit.as_deref(), Some(scope.as_str()));
            }
        }
        // The pod slice alone: pod, no container, no unit.
        let pod = w(&format!("/kubepods.slice/kubepods-pod{u}.slice"));
        assert_eq!(
            (pod.pod_uid.as_deref(), pod.container, pod.unit),
            (Some(UID), None, None)
        );
        // A pod slice in the wrong QoS parent is not kubelet's.
        assert_eq!(
            w(&format!(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-burstable-pod{u}.slice"
            ))
            .pod_uid,
            None
        );
    }

    #[test]
    fn kubelet_cgroupfs_driver() {
        for pod in [
            format!("/kubepods/burstable/pod{UID}"),
            format!("/kubepods/besteffort/pod{UID}"),
            format!("/kubepods/pod{UID}"),
            format!("/kubelet/kubepods/pod{UID}"), // --cgroup-root=/kubelet
        ] {
            let bare = w(&format!("{pod}/{ID}"));
            assert_eq!(bare.pod_uid.as_deref(), Some(UID), "{pod}");
            assert_eq!(bare.container, container(Runtime::Containerd), "{pod}");
            assert_eq!(
                w(&format!("{pod}/crio-{ID}")).container,
                container(Runtime::CriO)
            );
        }
        // Static pods have 32-hex-digit UIDs.
        let static_uid = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            w(&format!("/kubepods/pod{static_uid}")).pod_uid.as_deref(),
            Some(static_uid)
        );
        assert_eq!(w(&format!("/elsewhere/pod{UID}/{ID}")), Workload::default());
        assert_eq!(w("/kubepods/podnot-a-uid").pod_uid, None);
    }

    #[test]
    fn container_json() {
        let c = container(Runtime::CriO).unwrap();
        assert_eq!(c.to_json(), json!({"runtime": "cri-o", "id": ID}));
    }
}
