//! Shell completions and man pages, written by each binary from its own clap declaration.
//!
//! Every packaged binary (`commscan-agent`, `commscan-collector`, `commscanctl`) calls
//! [`generate_if_asked`] first thing in `main`, which gives it two commands that its own
//! declaration does not contain:
//!
//! | first arguments | writes |
//! |---|---|
//! | `completions SHELL` | the completion script for `bash`, `zsh`, `fish`, `elvish` or `powershell`, on stdout |
//! | `man DIR` | one roff page per command and subcommand into `DIR` (`commscanctl.1`, `commscanctl-devices.1`, `commscanctl-tokens-create.1`, …), and their paths on stdout |
//!
//! `deploy/packages/build.sh` runs the very binaries it packages to produce them, so what a
//! package installs describes the binary beside it: no second declaration to drift, no build
//! script on every compile, no generator binary that would have to link the agent, the
//! collector and the CLI together (ARCHITECTURE.md, "Dependencies, and why"). Someone who
//! installed with `cargo install` runs them the same way.
//!
//! They are recognised before the binary's own parser, rather than being hidden subcommands
//! of it, because clap_complete offers hidden subcommands all the same: this way `--help`,
//! the completions and the man pages never mention them. A binary that declares a subcommand
//! of one of these names keeps it (the binary's declaration wins). Nothing else runs for them:
//! no logging, no runtime, no TLS.

use clap::{CommandFactory, FromArgMatches, Subcommand};
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The two commands.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Docs {
    /// Print the shell completion script on stdout.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write a man page for every command and subcommand into DIR.
    Man {
        /// Directory to write the pages into (created if missing).
        dir: PathBuf,
    },
}

/// When the process's first argument is `completions` or `man` (and `C` declares no such
/// subcommand), writes them for `C` and returns the exit code; `None` otherwise.
pub fn generate_if_asked<C: CommandFactory>() -> Option<ExitCode> {
    let cmd = C::command();
    match Docs::parse_for(&cmd, std::env::args_os()) {
        None => None,
        Some(Ok(docs)) => Some(docs.run(cmd)),
        Some(Err(e)) => {
            // Usage errors exit 2, like every other clap error of the binary; help exits 0.
            let _ = e.print();
            Some(ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(1)))
        }
    }
}

impl Docs {
    /// The docs command in `args` (argv, program name first), if its first argument names
    /// one and `cmd` has no subcommand of that name.
    pub fn parse_for(
        cmd: &clap::Command,
        args: impl IntoIterator<Item = OsString>,
    ) -> Option<Result<Docs, clap::Error>> {
        let args: Vec<OsString> = args.into_iter().collect();
        let first = args.get(1)?.to_str()?;
        let probe = Docs::augment_subcommands(clap::Command::new("docs").bin_name(cmd.get_name()));
        if probe.find_subcommand(first).is_none() || cmd.find_subcommand(first).is_some() {
            return None;
        }
        let parsed = probe
            .subcommand_required(true)
            .disable_help_subcommand(true)
            .try_get_matches_from(args)
            .and_then(|m| Docs::from_arg_matches(&m));
        Some(parsed)
    }

    /// Writes what was asked for `cmd` (the binary's `Cli::command()`); errors are printed as
    /// `NAME: …` and exit 1.
    pub fn run(&self, cmd: clap::Command) -> ExitCode {
        let name = cmd.get_name().to_owned();
        let result = match self {
            Docs::Completions { shell } => {
                let mut out = std::io::stdout().lock();
                write_completions(cmd, *shell, &mut out).and_then(|()| out.flush())
            }
            Docs::Man { dir } => write_man_pages(cmd, dir).and_then(|files| {
                let mut out = std::io::stdout().lock();
                files
                    .iter()
                    .try_for_each(|f| writeln!(out, "{}", f.display()))
            }),
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{name}: {e}");
                ExitCode::FAILURE
            }
        }
    }
}

/// Writes the completion script of `cmd` for `shell` to `out`. A write error (a closed pipe)
/// is returned, where `clap_complete::generate` would panic.
pub fn write_completions(
    mut cmd: clap::Command,
    shell: clap_complete::Shell,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    use clap_complete::Generator;
    let name = cmd.get_name().to_owned();
    cmd.set_bin_name(name);
    cmd.build();
    shell.try_generate(&cmd, out)
}

/// Writes `NAME.1` for `cmd` and `NAME-SUB[-SUB…].1` for each subcommand that is not hidden
/// (none for clap's `help`) into `dir`; returns the files written, subcommands first.
pub fn write_man_pages(cmd: clap::Command, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    fn write(
        cmd: clap::Command,
        source: &str,
        date: &str,
        dir: &Path,
        files: &mut Vec<PathBuf>,
    ) -> std::io::Result<()> {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            write(sub.clone(), source, date, dir, files)?;
        }
        let page = clap_mangen::Man::new(cmd)
            .date(date)
            .manual("commscan")
            .source(source);
        let path = dir.join(page.get_filename());
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path)?);
        page.render(&mut file)?;
        file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        files.push(path);
        Ok(())
    }
    std::fs::create_dir_all(dir)?;
    // Every page's footer names the binary's version (subcommands carry none of their own).
    let source = format!(
        "{} {}",
        cmd.get_name(),
        cmd.get_version().unwrap_or_default()
    );
    let mut cmd = cmd.disable_help_subcommand(true);
    // Subcommands get their display names (`commscanctl-devices`), which name the pages.
    cmd.build();
    let mut files = Vec::new();
    let date = page_date(
        std::env::var("SOURCE_DATE_EPOCH").ok().as_deref(),
        time::OffsetDateTime::now_utc(),
    );
    write(cmd, source.trim_end(), &date, dir, &mut files)?;
    Ok(files)
}

/// The date in the pages' footer, `YYYY-MM-DD`: that of `SOURCE_DATE_EPOCH` when set (the
/// packages set it to the commit's time, so a rebuild writes the same pages), else today.
/// clap_mangen's default, no date, shifts the footer's fields.
fn page_date(source_date_epoch: Option<&str>, now: time::OffsetDateTime) -> String {
    source_date_epoch
        .and_then(|s| s.trim().parse::<i64>().ok())
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .unwrap_or(now)
        .date()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser)]
    #[command(name = "tool", version = "1.2.3", about = "A tool")]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }

    #[derive(Subcommand)]
    enum Command {
        /// Lists things.
        List {
            /// Only these.
            #[arg(long, env = "TOOL_ONLY")]
            only: Option<String>,
        },
        /// Tokens.
        #[command(subcommand)]
        Tokens(Tokens),
        /// A binary's own `man` wins over the docs command.
        #[command(hide = true)]
        Man,
    }

    #[derive(Subcommand)]
    enum Tokens {
        /// Creates a token.
        Create,
    }

    fn args(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    #[test]
    fn completions_are_recognised_before_the_binarys_parser_and_absent_from_its_help() {
        let cmd = Cli::command();
        let parsed = Docs::parse_for(&cmd, args(&["tool", "completions", "zsh"]));
        assert_eq!(
            parsed.unwrap().unwrap(),
            Docs::Completions {
                shell: clap_complete::Shell::Zsh
            }
        );
        let e = Docs::parse_for(&cmd, args(&["tool", "completions", "tcsh"]))
            .unwrap()
            .unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::InvalidValue, "{e}");
        assert!(Docs::parse_for(&cmd, args(&["tool", "list"])).is_none());
        assert!(Docs::parse_for(&cmd, args(&["tool"])).is_none());
        // The binary declares its own `man`: that one runs.
        assert!(Docs::parse_for(&cmd, args(&["tool", "man", "/tmp/x"])).is_none());
        let help = Cli::command().render_long_help().to_string();
        assert!(!help.contains("completions"), "{help}");
    }

    #[test]
    fn man_is_recognised_with_its_directory() {
        let cmd = clap::Command::new("other").subcommand(clap::Command::new("run"));
        let parsed = Docs::parse_for(&cmd, args(&["other", "man", "/tmp/pages"]));
        assert_eq!(
            parsed.unwrap().unwrap(),
            Docs::Man {
                dir: PathBuf::from("/tmp/pages")
            }
        );
    }

    #[test]
    fn a_page_for_every_visible_command_and_none_for_hidden_ones() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_man_pages(Cli::command(), dir.path()).unwrap();
        let mut names: Vec<_> = files
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "tool-list.1",
                "tool-tokens-create.1",
                "tool-tokens.1",
                "tool.1"
            ]
        );
        let page = std::fs::read_to_string(dir.path().join("tool-list.1")).unwrap();
        assert!(page.starts_with(".ie \\n(.g .ds Aq"), "{page}");
        let th = page.lines().find(|l| l.starts_with(".TH ")).unwrap();
        let fields: Vec<_> = th.split_whitespace().collect();
        assert_eq!(fields[..3], [".TH", "tool-list", "1"], "{th}");
        assert_eq!(
            fields[3].len(),
            "2026-11-30".len(),
            "a date in its field: {th}"
        );
        assert!(
            th.ends_with(" \"tool 1.2.3\" commscan"),
            "version, manual: {th}"
        );
        assert!(
            page.contains("TOOL_ONLY"),
            "the environment variable is documented: {page}"
        );
        let top = std::fs::read_to_string(dir.path().join("tool.1")).unwrap();
        assert!(!top.contains("completions"), "{top}");
    }

    #[test]
    fn completions_name_the_binary_and_never_offer_the_docs_commands() {
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let mut out = Vec::new();
            write_completions(Cli::command(), shell, &mut out).unwrap();
            let script = String::from_utf8(out).unwrap();
            assert!(
                script.contains("tool") && script.contains("tokens"),
                "{shell}: {script}"
            );
            assert!(!script.contains("completions"), "{shell}: {script}");
        }
    }

    #[test]
    fn a_closed_output_is_an_error_not_a_panic() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let e =
            write_completions(Cli::command(), clap_complete::Shell::Bash, &mut Closed).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe);
    }

    #[test]
    fn the_pages_date_is_source_date_epochs_else_today() {
        let now = time::macros::datetime!(2026-11-30 10:00 UTC);
        assert_eq!(page_date(Some("1767225600"), now), "2026-01-01");
        assert_eq!(page_date(None, now), "2026-11-30");
        assert_eq!(page_date(Some("not a number"), now), "2026-11-30");
    }
}
