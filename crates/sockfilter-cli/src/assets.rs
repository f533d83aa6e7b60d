//! `sockfilter assets DIR` (hidden): the man pages and shell completions
//! generated from the command-line definition, for the package
//! (scripts/package.sh), so they never disagree with the binary.

use clap::CommandFactory;
use clap_complete::Shell;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `sockfilter assets`.
#[derive(clap::Args)]
pub struct Args {
    /// Where to write man/ and completions/.
    pub dir: PathBuf,
}

/// Writes `DIR/man/sockfilter.1`, one `sockfilter-COMMAND.1` per command,
/// and `DIR/completions/` for bash, zsh and fish.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let man = args.dir.join("man");
    let completions = args.dir.join("completions");
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&completions)?;
    let cmd = crate::Cli::command();
    write_man(&man, &cmd, "sockfilter")?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("sockfilter-{}", sub.get_name());
        write_man(&man, &sub.clone().name(name.clone()), &name)?;
    }
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(
            shell,
            &mut crate::Cli::command(),
            "sockfilter",
            &completions,
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

fn write_man(dir: &std::path::Path, cmd: &clap::Command, name: &str) -> anyhow::Result<()> {
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut page)?;
    std::fs::write(dir.join(format!("{name}.1")), page)?;
    Ok(())
}
