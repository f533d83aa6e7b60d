//! `sockfilter doctor`: what the running kernel offers for each mechanism
//! sockfilter uses, found by trying each (see [`sockfilter::features`]),
//! and what sockfilter does without the ones it lacks.

use crate::listeners::table;
use sockfilter::features::{self, Command, Feature, Report};
use std::io::Write;
use std::process::ExitCode;

/// Arguments of `sockfilter doctor`.
#[derive(clap::Args)]
pub struct Args {
    /// Print one JSON object: the kernel release and every feature.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let reports = features::probe_all();
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut out = std::io::stdout().lock();
    if args.json {
        let json = serde_json::json!({
            "kernel": release,
            "features": reports.iter().map(report_json).collect::<Vec<_>>(),
        });
        serde_json::to_writer_pretty(&mut out, &json)?;
        writeln!(out)?;
    } else {
        out.write_all(text(&release, &reports).as_bytes())?;
    }
    // Non-zero when watch or enforce could not start here.
    let blocked = reports.iter().any(|r| {
        r.status.available() == Some(false)
            && !r.feature.required_by().is_empty()
            && r.feature.required_by() != [Command::Supervise]
    });
    Ok(if blocked {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn command_names(cs: &[Command]) -> Vec<&'static str> {
    cs.iter()
        .map(|c| match c {
            Command::Watch => "watch",
            Command::Enforce => "enforce",
            Command::Supervise => "supervise",
        })
        .collect()
}

fn report_json(r: &Report) -> serde_json::Value {
    let f: Feature = r.feature;
    serde_json::json!({
        "feature": f.id(),
        "name": f.name(),
        "available": r.status.available(),
        "detail": r.status.detail(),
        "without": f.without(),
        "required_by": command_names(f.required_by()),
        "degrades": command_names(f.degrades()),
    })
}

fn text(release: &str, reports: &[Report]) -> String {
    let rows = reports
        .iter()
        .map(|r| {
            let available = match r.status.available() {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "unknown",
            };
            let without = if r.status.available() == Some(true) {
                String::new()
            } else {
                r.feature.without().to_string()
            };
            vec![r.feature.id().to_string(), available.to_string(), without]
        })
        .collect();
    let mut s = format!("kernel {release}\n\n");
    s.push_str(&table(&["FEATURE", "AVAILABLE", "WITHOUT IT"], rows));
    s.push_str("\nwhat each is and what was found:\n");
    for r in reports {
        s.push_str(&format!(
            "  {}: {}\n      {}\n",
            r.feature.id(),
            r.feature.name(),
            r.status.detail()
        ));
    }
    s
}
