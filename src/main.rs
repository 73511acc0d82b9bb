//! `storyloom`: the studio (no arguments), headless rendering, export and developer tools.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Parser, Subcommand};
use storyloom::engine::{EngineHandle, Event, Job, ModelSpec};
use storyloom::project::{self, Project};

#[derive(Parser)]
#[command(
    name = "storyloom",
    version,
    about = "Storyboards with the same character in every frame"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Project folder to open in the studio (default: the demo project).
    #[arg(long)]
    project: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Render frames of a project without a window (e.g. on a GPU server).
    Render {
        /// The project folder.
        project: PathBuf,
        /// Frames to render, by number: e.g. 1,3-5 (default: all).
        #[arg(long)]
        frames: Option<String>,
        /// Also copy the finished images here as frame_001.png, ...
        #[arg(long)]
        out: Option<PathBuf>,
        /// Model: `builtin`, `tiny` (untrained test model) or the project's own (default).
        #[arg(long)]
        model: Option<String>,
    },
    /// Export a project: frame sheet, PDF pages, image sequence, animated GIF.
    Export {
        project: PathBuf,
        #[arg(long)]
        sheet: Option<PathBuf>,
        #[arg(long)]
        pdf: Option<PathBuf>,
        #[arg(long)]
        sequence: Option<PathBuf>,
        #[arg(long)]
        gif: Option<PathBuf>,
    },
    /// Write the demo project (an identity and six frames) to a folder.
    Demo { folder: PathBuf },
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
        None => studio(cli.project),
        Some(Command::Render {
            project,
            frames,
            out,
            model,
        }) => render(
            &project,
            frames.as_deref(),
            out.as_deref(),
            model.as_deref(),
        ),
        Some(Command::Export {
            project,
            sheet,
            pdf,
            sequence,
            gif,
        }) => export(&project, sheet, pdf, sequence, gif),
        Some(Command::Demo { folder }) => write_demo(&folder),
        Some(Command::InspectWeights { paths }) => inspect_weights(&paths),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The demo story (`assets/demo/project.ron`), built into the program so the first start
/// works from anywhere.
const DEMO_PROJECT: &str = include_str!("../assets/demo/project.ron");

fn demo_project() -> anyhow::Result<Project> {
    project::migrate::parse_project(
        Path::new("assets/demo/project.ron"),
        DEMO_PROJECT.as_bytes(),
    )
    .context("the built-in demo project")
}

fn write_demo(folder: &Path) -> anyhow::Result<()> {
    project::create(folder, &demo_project()?)
        .with_context(|| format!("writing the demo project to {}", folder.display()))?;
    println!("wrote {}", folder.display());
    Ok(())
}

/// The demo project's folder under the user's data folder, created on first start.
fn demo_folder() -> anyhow::Result<PathBuf> {
    let dirs = directories::ProjectDirs::from("", "", "Storyloom")
        .context("no home folder to keep projects in")?;
    let folder = dirs.data_dir().join("demo");
    if !folder.join("project.ron").exists() {
        write_demo(&folder)?;
    }
    Ok(folder)
}

fn studio(project: Option<PathBuf>) -> anyhow::Result<()> {
    let _log = storyloom::ui::logging::init();
    let project = match project {
        Some(p) => p,
        None => demo_folder()?,
    };
    storyloom::ui::run(storyloom::ui::AppOptions {
        project: Some(project),
        model: None,
    })
}

fn now_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn render(
    dir: &Path,
    frames: Option<&str>,
    out: Option<&Path>,
    model: Option<&str>,
) -> anyhow::Result<()> {
    let outcome = project::open(dir)?;
    for w in &outcome.warnings {
        eprintln!("warning: {w}");
    }
    let mut project = outcome.project;
    let positions = match frames {
        Some(sel) => Some(
            project::engine_link::parse_frame_selection(sel, project.frames.len())
                .map_err(anyhow::Error::msg)?,
        ),
        None => None,
    };
    let jobs = project.frame_jobs(positions.as_deref());
    anyhow::ensure!(!jobs.is_empty(), "the project has no frames to render");
    let spec = match model {
        None => project.model.to_model_spec(),
        Some("builtin") => ModelSpec::Builtin,
        Some("tiny") => ModelSpec::TinyRandom { seed: 1 },
        Some(other) => anyhow::bail!("unknown model `{other}` (builtin, tiny)"),
    };
    let engine = EngineHandle::spawn(|| {});
    engine.send(Job::LoadModel(spec));
    // Each frame's progress as a fraction: with consistency methods frames render together
    // over several passes, so the step counts come from the engine's events.
    const UNITS: u64 = 1000;
    let mut fractions = vec![0.0f64; jobs.len()];
    let bar = indicatif::ProgressBar::new(jobs.len() as u64 * UNITS);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {percent}%  {msg}  eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut story = project.story_context();
    story.cache_dir = Some(dir.join(project::store::CACHE_DIR));
    engine.send(Job::Generate {
        story,
        frames: jobs.clone(),
        settings: project.render_settings(false),
    });
    let mut done = 0;
    let mut written = Vec::new();
    while done < jobs.len() {
        let event = engine
            .events()
            .recv_timeout(Duration::from_secs(3600))
            .context("the engine stopped answering")?;
        match event {
            Event::ModelLoaded { name, description } => {
                // Says where it runs, e.g. why a CUDA build fell back to the CPU.
                bar.suspend(|| eprintln!("model: {name} ({description})"));
                bar.set_message(format!("model: {name}"));
            }
            Event::Progress {
                frame_id, step, of, ..
            } => {
                if let Some(index) = jobs.iter().position(|j| j.frame_id == frame_id) {
                    fractions[index] = step as f64 / of.max(1) as f64;
                    bar.set_position((fractions.iter().sum::<f64>() * UNITS as f64) as u64);
                }
            }
            Event::IdentityDone {
                image,
                analysis,
                metadata,
            } => {
                project::engine_link::store_identity_image(
                    dir,
                    &mut project,
                    &image,
                    &analysis,
                    &metadata,
                    now_seconds(),
                )?;
            }
            Event::FrameDone(result) => {
                let (mask, matches) = project::engine_link::analysis_files(&result.analysis);
                let stored = project::engine_link::store_frame_result(
                    dir,
                    &mut project,
                    &result,
                    mask.as_ref(),
                    &matches,
                    now_seconds(),
                )?;
                if let (Some(out), Some(_)) = (out, stored) {
                    std::fs::create_dir_all(out)?;
                    let number = project
                        .frames
                        .iter()
                        .position(|f| f.id == result.frame_id)
                        .unwrap_or(0)
                        + 1;
                    let path = out.join(format!("frame_{number:03}.png"));
                    result
                        .image
                        .save(&path)
                        .with_context(|| format!("writing {}", path.display()))?;
                    written.push(path);
                }
                done += 1;
            }
            Event::Error { message, .. } => {
                bar.abandon();
                anyhow::bail!("{message}");
            }
            Event::Cancelled { .. } => anyhow::bail!("rendering was cancelled"),
            _ => {}
        }
    }
    bar.finish_with_message("done");
    project::save(dir, &project)?;
    println!("rendered {done} frame(s) into {}", dir.display());
    for p in written {
        println!("  {}", p.display());
    }
    Ok(())
}

fn export(
    dir: &Path,
    sheet: Option<PathBuf>,
    pdf: Option<PathBuf>,
    sequence: Option<PathBuf>,
    gif: Option<PathBuf>,
) -> anyhow::Result<()> {
    use storyloom::export;
    anyhow::ensure!(
        sheet.is_some() || pdf.is_some() || sequence.is_some() || gif.is_some(),
        "say what to export: --sheet, --pdf, --sequence or --gif"
    );
    let (doc, warnings) = export::collect_from_folder(dir, now_seconds())?;
    for w in warnings {
        eprintln!("warning: {w}");
    }
    if let Some(path) = sheet {
        export::sheet::write_sheet(&path, &doc, &export::sheet::SheetOptions::default())?;
        println!("wrote {}", path.display());
    }
    if let Some(path) = pdf {
        export::pdf::write_pdf(&path, &doc, &export::pdf::PdfOptions::default())?;
        println!("wrote {}", path.display());
    }
    if let Some(folder) = sequence {
        let files = export::sequence::write_sequence(&folder, &doc)?;
        println!("wrote {} images to {}", files.len(), folder.display());
    }
    if let Some(path) = gif {
        export::animatic::write_gif(&path, &doc, 512)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// Every weight file (safetensors, GGUF) below a path (a file is itself).
fn weight_files(path: &Path) -> Vec<PathBuf> {
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
            } else if storyloom::model::weights::is_weight_file(&p) {
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
            println!("{}: no .safetensors or .gguf files found", path.display());
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
