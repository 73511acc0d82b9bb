//! `storyloom`: the studio (no arguments), headless rendering and developer tools.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "storyloom", version, about = "Storyboards with the same character in every frame")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Say what weight files are: format, component, inferred config, dtype, parameters, and
    /// what else a complete FLUX set needs.
    InspectWeights {
        /// Files or folders (diffusers folders are searched for their parts).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::InspectWeights { paths }) => inspect_weights(&paths),
        None => Err(anyhow::anyhow!("run with --help to see the commands")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Every safetensors file below a path (a file is itself).
fn weight_files(path: &std::path::Path) -> Vec<PathBuf> {
    if path.is_file() {
        return vec![path.to_path_buf()];
    }
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(path) {
        let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                out.extend(weight_files(&p));
            } else if p.extension().is_some_and(|e| e == "safetensors") {
                out.push(p);
            }
        }
    }
    out
}

fn inspect_weights(paths: &[PathBuf]) -> anyhow::Result<()> {
    let mut failures = 0;
    for path in paths {
        let files = weight_files(path);
        if files.is_empty() {
            println!("{}: no .safetensors files found", path.display());
            failures += 1;
        }
        for file in files {
            match storyloom::model::weights::classify(&file) {
                Ok(report) => println!("{report}"),
                Err(e) => {
                    println!("{}\n  error: {e}", file.display());
                    failures += 1;
                }
            }
        }
    }
    anyhow::ensure!(failures == 0, "{failures} path(s) could not be read");
    Ok(())
}
