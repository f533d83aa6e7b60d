//! `sockfilter flows`: the flows that exist right now (listeners,
//! connections, bound and connected UDP sockets), built by feeding the
//! start-up snapshot of a watch into a [`FlowTable`].

use crate::listeners::{owner_cells, proto_label, table, workload_cells};
use sockfilter_model::flow::{Direction, Flow, FlowTable};
use sockfilter_model::text::escape_or;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `sockfilter flows`.
#[derive(clap::Args)]
pub struct Args {
    /// Print a JSON array of flow objects.
    #[arg(long)]
    pub json: bool,
    /// Only flows of processes in this cgroup v2 subtree (a directory of the
    /// cgroup2 mount).
    #[arg(long)]
    pub cgroup: Option<PathBuf>,
}

/// `/sys/fs/cgroup/a/b` -> `/a/b`, as /proc/PID/cgroup names it.
fn cgroup_name(dir: &std::path::Path) -> anyhow::Result<String> {
    anyhow::ensure!(
        dir.is_dir(),
        "--cgroup {}: not a directory of the cgroup v2 hierarchy",
        dir.display()
    );
    let root = sockfilter::cgroup::cgroup2_mount()
        .ok_or_else(|| anyhow::anyhow!("no cgroup v2 hierarchy is mounted"))?;
    let dir = std::fs::canonicalize(dir)?;
    let root = std::fs::canonicalize(root)?;
    let rel = dir.strip_prefix(&root).map_err(|_| {
        anyhow::anyhow!(
            "--cgroup {}: not below the cgroup v2 mount {}",
            dir.display(),
            root.display()
        )
    })?;
    Ok(format!("/{}", rel.display()))
}

/// The flows of the sockets that exist now (optionally only those of a
/// cgroup subtree), in the table's stable order.
pub fn current_flows(cgroup: Option<&std::path::Path>) -> anyhow::Result<Vec<Flow>> {
    let subtree = cgroup.map(cgroup_name).transpose()?;
    let mut table = FlowTable::new();
    for e in sockfilter::watch::existing_events(subtree.as_deref()) {
        let _ = table.apply(&e);
    }
    Ok(table.sorted().into_iter().cloned().collect())
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let flows = current_flows(args.cgroup.as_deref())?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let all: Vec<serde_json::Value> = flows.iter().map(Flow::to_json).collect();
        serde_json::to_writer_pretty(&mut out, &all)?;
        writeln!(out)?;
    } else {
        let rows = flows
            .iter()
            .map(|f| {
                let mut r = vec![
                    format!("sk:{:x}", f.id),
                    match f.direction {
                        Direction::Inbound => "in".into(),
                        Direction::Outbound => "out".into(),
                    },
                    f.state.as_str().into(),
                    proto_label(f.proto, f.family),
                    f.local.to_string(),
                    f.remote
                        .map(|r| r.to_string())
                        .unwrap_or_else(|| "*".into()),
                    escape_or(f.remote_host.as_deref(), "").into_owned(),
                ];
                let [pid, uid, comm, exe, _cgroup] = owner_cells(f.owner.as_ref());
                r.extend([pid, uid, comm, exe]);
                r.extend(workload_cells(f.owner.as_ref()));
                r.push(f.listener.map(|l| format!("sk:{l:x}")).unwrap_or_default());
                r
            })
            .collect();
        write!(
            out,
            "{}",
            table(
                &[
                    "ID",
                    "DIR",
                    "STATE",
                    "PROTO",
                    "LOCAL",
                    "REMOTE",
                    "HOST",
                    "PID",
                    "UID",
                    "COMM",
                    "EXE",
                    "UNIT",
                    "CONTAINER",
                    "POD",
                    "LISTENER"
                ],
                rows
            )
        )?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
