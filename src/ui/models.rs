//! The Models page: finds FLUX weight files in a chosen folder and in the Hugging Face
//! cache, says what each file is (from its header), lets the user pick one file per
//! component with a file dialog (run off the UI thread), validates the choice and estimates
//! the memory the set needs.

use std::path::{Path, PathBuf};

use crossbeam_channel::{Receiver, TryRecvError, bounded};

use crate::engine::{FluxFiles, ModelSpec};
use crate::model::weights::{Component, FileReport, classify, is_weight_file};

/// Where the Hugging Face hub keeps downloads, as the `huggingface_hub` library resolves it:
/// `HF_HUB_CACHE`, else `HF_HOME/hub`, else `XDG_CACHE_HOME/huggingface/hub`, else
/// `~/.cache/huggingface/hub`. `env` reads a variable (empty values count as unset).
pub fn hf_hub_cache(env: impl Fn(&str) -> Option<String>, home: Option<&Path>) -> Option<PathBuf> {
    let var = |k: &str| env(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(p) = var("HF_HUB_CACHE") {
        return Some(p);
    }
    if let Some(p) = var("HF_HOME") {
        return Some(p.join("hub"));
    }
    if let Some(p) = var("XDG_CACHE_HOME") {
        return Some(p.join("huggingface").join("hub"));
    }
    home.map(|h| h.join(".cache").join("huggingface").join("hub"))
}

/// The hub cache of this process's environment.
pub fn default_hf_hub_cache() -> Option<PathBuf> {
    let home = directories::BaseDirs::new().map(|d| d.home_dir().to_path_buf());
    hf_hub_cache(|k| std::env::var(k).ok(), home.as_deref())
}

/// Every weight file (`.safetensors`, `.gguf`) below `root` (symlinks followed, as the hub's
/// snapshot folders link into `blobs/`), sorted, at most `limit` files and `max_depth` levels.
pub fn find_weight_files(root: &Path, max_depth: usize, limit: usize) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![(root.to_path_buf(), 0)];
    while let Some((dir, depth)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut entries: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                // The hub's blobs are extension-less copies of the snapshot files.
                if depth < max_depth && p.file_name().is_none_or(|n| n != "blobs") {
                    stack.push((p, depth + 1));
                }
            } else if is_weight_file(&p) {
                out.push(p);
            }
        }
    }
    out.sort();
    out.truncate(limit);
    out
}

/// A slot of the FLUX set the user fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Part {
    Transformer,
    Vae,
    T5,
    T5Tokenizer,
    Clip,
    ClipTokenizer,
}

impl Part {
    pub const ALL: [Part; 6] = [
        Part::Transformer,
        Part::Vae,
        Part::T5,
        Part::T5Tokenizer,
        Part::Clip,
        Part::ClipTokenizer,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Part::Transformer => "Transformer",
            Part::Vae => "Autoencoder (VAE)",
            Part::T5 => "T5 text encoder",
            Part::T5Tokenizer => "T5 tokenizer.json",
            Part::Clip => "CLIP text encoder (optional)",
            Part::ClipTokenizer => "CLIP tokenizer.json (optional)",
        }
    }

    pub fn is_tokenizer(self) -> bool {
        matches!(self, Part::T5Tokenizer | Part::ClipTokenizer)
    }

    pub fn optional(self) -> bool {
        matches!(self, Part::Clip | Part::ClipTokenizer)
    }

    /// Whether a classified component can fill this part.
    pub fn accepts(self, component: &Component) -> bool {
        match (self, component) {
            (Part::Transformer, Component::Transformer(_)) => true,
            (Part::Vae, Component::Vae(_)) => true,
            (Part::T5, Component::T5Encoder) => true,
            (Part::Clip, Component::ClipText) => true,
            (_, Component::Bundle(parts)) => parts.iter().any(|c| self.accepts(c)),
            _ => false,
        }
    }
}

/// Checks a chosen file for a part: weights are classified from their header; tokenizers
/// must be a readable `tokenizer.json`.
pub fn validate(part: Part, path: &Path) -> Result<Option<FileReport>, String> {
    if part.is_tokenizer() {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("not a tokenizer.json: {e}"))?;
        if json.get("model").is_none() {
            return Err("not a tokenizer.json: it has no \"model\" entry".into());
        }
        return Ok(None);
    }
    let report = classify(path).map_err(|e| e.to_string())?;
    if !part.accepts(&report.component) {
        return Err(format!(
            "this file holds {}, not the {}",
            report.component,
            part.label()
        ));
    }
    Ok(Some(report))
}

/// Bytes the weights of a file take when loaded as stored (a GGUF file's quantized
/// tensors as stored, its other tensors in f32).
pub fn stored_bytes(report: &FileReport) -> u64 {
    report.loaded_bytes
}

/// Human-readable size in GB / MB.
pub fn format_bytes(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.1} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.0} MB", b / 1e6)
    } else {
        format!("{:.0} kB", b / 1e3)
    }
}

/// A scanned file and what it is.
#[derive(Debug, Clone)]
pub struct ScannedFile {
    pub path: PathBuf,
    pub report: Result<FileReport, String>,
}

/// One chosen part: the path and its check.
#[derive(Debug, Clone)]
pub struct Chosen {
    pub path: PathBuf,
    pub check: Result<Option<FileReport>, String>,
}

/// State of the Models page.
#[derive(Default)]
pub struct ModelsPage {
    pub open: bool,
    /// Folder chosen by the user to scan (besides the hub cache).
    pub folder: Option<PathBuf>,
    pub files: Vec<ScannedFile>,
    pub chosen: std::collections::HashMap<Part, Chosen>,
    scan: Option<Receiver<Vec<ScannedFile>>>,
    dialog: Option<(DialogTarget, Receiver<Option<PathBuf>>)>,
}

/// What an open file dialog will fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialogTarget {
    Folder,
    Part(Part),
}

impl ModelsPage {
    pub fn is_scanning(&self) -> bool {
        self.scan.is_some()
    }

    pub fn dialog_open(&self) -> bool {
        self.dialog.is_some()
    }

    /// Scans the chosen folder and the hub cache on a worker thread.
    pub fn start_scan(&mut self) {
        let mut roots: Vec<PathBuf> = self.folder.iter().cloned().collect();
        roots.extend(default_hf_hub_cache().filter(|p| p.is_dir()));
        let (tx, rx) = bounded(1);
        std::thread::spawn(move || {
            let mut files = Vec::new();
            for root in roots {
                for path in find_weight_files(&root, 8, 400) {
                    let report = classify(&path).map_err(|e| e.to_string());
                    files.push(ScannedFile { path, report });
                }
            }
            let _ = tx.send(files);
        });
        self.scan = Some(rx);
    }

    /// Opens a native file dialog on its own thread (the UI keeps running).
    pub fn open_dialog(&mut self, target: DialogTarget) {
        if self.dialog.is_some() {
            return;
        }
        let (tx, rx) = bounded(1);
        let start = self.folder.clone();
        std::thread::spawn(move || {
            let mut dialog = rfd::FileDialog::new();
            if let Some(dir) = start {
                dialog = dialog.set_directory(dir);
            }
            let picked = match target {
                DialogTarget::Folder => dialog.pick_folder(),
                DialogTarget::Part(p) if p.is_tokenizer() => {
                    dialog.add_filter("tokenizer", &["json"]).pick_file()
                }
                DialogTarget::Part(Part::Transformer) => dialog
                    .add_filter("weights", &["safetensors", "gguf"])
                    .pick_file(),
                DialogTarget::Part(_) => dialog
                    .add_filter("safetensors", &["safetensors"])
                    .pick_file(),
            };
            let _ = tx.send(picked);
        });
        self.dialog = Some((target, rx));
    }

    /// Sets a part (validating it at once).
    pub fn choose(&mut self, part: Part, path: PathBuf) {
        let check = validate(part, &path);
        self.chosen.insert(part, Chosen { path, check });
    }

    /// Takes finished scans and dialogs. Returns true when something changed.
    pub fn poll(&mut self) -> bool {
        let mut changed = false;
        if let Some(rx) = &self.scan {
            match rx.try_recv() {
                Ok(files) => {
                    self.files = files;
                    self.scan = None;
                    changed = true;
                }
                Err(TryRecvError::Disconnected) => self.scan = None,
                Err(TryRecvError::Empty) => {}
            }
        }
        if let Some((target, rx)) = &self.dialog {
            let target = *target;
            match rx.try_recv() {
                Ok(picked) => {
                    self.dialog = None;
                    if let Some(path) = picked {
                        match target {
                            DialogTarget::Folder => {
                                self.folder = Some(path);
                                self.start_scan();
                            }
                            DialogTarget::Part(p) => self.choose(p, path),
                        }
                    }
                    changed = true;
                }
                Err(TryRecvError::Disconnected) => self.dialog = None,
                Err(TryRecvError::Empty) => {}
            }
        }
        changed
    }

    /// Fills empty parts from scanned files that fit them (first fit wins).
    pub fn fill_from_scan(&mut self) {
        let files = self.files.clone();
        for part in [Part::Transformer, Part::Vae, Part::T5, Part::Clip] {
            if self.chosen.contains_key(&part) {
                continue;
            }
            if let Some(f) = files
                .iter()
                .find(|f| f.report.as_ref().is_ok_and(|r| part.accepts(&r.component)))
            {
                self.choose(part, f.path.clone());
            }
        }
    }

    /// Memory the chosen weights need as stored.
    pub fn memory_estimate(&self) -> u64 {
        let mut seen = std::collections::HashSet::new();
        self.chosen
            .values()
            .filter_map(|c| c.check.as_ref().ok()?.as_ref())
            .filter(|r| seen.insert(r.path.clone()))
            .map(stored_bytes)
            .sum()
    }

    /// The model spec when every required part is chosen and valid.
    pub fn spec(&self) -> Result<ModelSpec, String> {
        let get = |p: Part| -> Result<Option<PathBuf>, String> {
            match self.chosen.get(&p) {
                Some(Chosen { check: Err(e), .. }) => Err(format!("{}: {e}", p.label())),
                Some(c) => Ok(Some(c.path.clone())),
                None if p.optional() => Ok(None),
                None => Err(format!("choose the {}", p.label())),
            }
        };
        let need = |p: Part| get(p).map(|o| o.unwrap_or_default());
        Ok(ModelSpec::Flux(FluxFiles {
            transformer: need(Part::Transformer)?,
            vae: need(Part::Vae)?,
            t5: need(Part::T5)?,
            t5_tokenizer: need(Part::T5Tokenizer)?,
            clip: get(Part::Clip)?,
            clip_tokenizer: get(Part::ClipTokenizer)?,
        }))
    }
}

/// Draws the Models page. Returns a model to load when the user asks for one.
pub fn models_ui(ui: &mut egui::Ui, page: &mut ModelsPage) -> Option<ModelSpec> {
    let mut load = None;
    ui.horizontal(|ui| {
        if ui.button("Choose folder…").clicked() {
            page.open_dialog(DialogTarget::Folder);
        }
        if ui
            .add_enabled(!page.is_scanning(), egui::Button::new("Rescan"))
            .clicked()
        {
            page.start_scan();
        }
        if page.is_scanning() {
            ui.spinner();
            ui.label("Scanning…");
        }
    });
    match &page.folder {
        Some(f) => ui.label(format!("Folder: {}", f.display())),
        None => ui.label("Folder: none chosen"),
    };
    match default_hf_hub_cache() {
        Some(c) => ui.label(format!("Hugging Face cache: {}", c.display())),
        None => ui.label("Hugging Face cache: not found"),
    };
    ui.separator();
    ui.heading("Files found");
    if page.files.is_empty() {
        ui.weak("No .safetensors or .gguf files found yet.");
    }
    egui::ScrollArea::vertical()
        .max_height(180.0)
        .id_salt("models_files")
        .show(ui, |ui| {
            let mut pick = None;
            for f in &page.files {
                ui.horizontal(|ui| {
                    let name = f
                        .path
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    ui.label(name).on_hover_text(f.path.display().to_string());
                    match &f.report {
                        Ok(r) => {
                            ui.weak(format!(
                                "{} · {} · {:.1} M parameters",
                                r.component,
                                r.dtypes.join("/"),
                                r.parameters as f64 / 1e6
                            ));
                            for part in Part::ALL {
                                if part.accepts(&r.component)
                                    && ui
                                        .small_button(format!("Use as {}", part.label()))
                                        .clicked()
                                {
                                    pick = Some((part, f.path.clone()));
                                }
                            }
                        }
                        Err(e) => {
                            ui.colored_label(ui.visuals().error_fg_color, e);
                        }
                    }
                });
            }
            if let Some((part, path)) = pick {
                page.choose(part, path);
            }
        });
    ui.separator();
    ui.heading("FLUX set");
    egui::Grid::new("models_parts")
        .num_columns(3)
        .show(ui, |ui| {
            for part in Part::ALL {
                ui.label(part.label());
                match page.chosen.get(&part) {
                    Some(c) => {
                        let text = c.path.display().to_string();
                        match &c.check {
                            Ok(_) => ui.label(format!("OK: {text}")),
                            Err(e) => ui.colored_label(
                                ui.visuals().error_fg_color,
                                format!("Problem: {e}"),
                            ),
                        };
                    }
                    None => {
                        ui.weak("not chosen");
                    }
                }
                if ui
                    .add_enabled(!page.dialog_open(), egui::Button::new("Browse…"))
                    .clicked()
                {
                    page.open_dialog(DialogTarget::Part(part));
                }
                ui.end_row();
            }
        });
    ui.label(format!(
        "Memory needed for the weights (as stored): {}",
        format_bytes(page.memory_estimate())
    ));
    ui.horizontal(|ui| {
        if ui.button("Fill from files found").clicked() {
            page.fill_from_scan();
        }
        let spec = page.spec();
        let r = ui.add_enabled(spec.is_ok(), egui::Button::new("Load this model"));
        if let Err(why) = &spec {
            r.clone().on_disabled_hover_text(why);
        }
        if r.clicked() {
            load = spec.ok();
        }
        if ui.button("Use the built-in model").clicked() {
            load = Some(ModelSpec::Builtin);
        }
    });
    load
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn hub_cache_follows_huggingface_precedence() {
        let home = Path::new("/home/a");
        assert_eq!(
            hf_hub_cache(
                env(&[("HF_HUB_CACHE", "/c"), ("HF_HOME", "/h")]),
                Some(home)
            ),
            Some(PathBuf::from("/c"))
        );
        assert_eq!(
            hf_hub_cache(
                env(&[("HF_HOME", "/h"), ("XDG_CACHE_HOME", "/x")]),
                Some(home)
            ),
            Some(PathBuf::from("/h/hub"))
        );
        assert_eq!(
            hf_hub_cache(
                env(&[("HF_HOME", ""), ("XDG_CACHE_HOME", "/x")]),
                Some(home)
            ),
            Some(PathBuf::from("/x/huggingface/hub"))
        );
        assert_eq!(
            hf_hub_cache(env(&[]), Some(home)),
            Some(PathBuf::from("/home/a/.cache/huggingface/hub"))
        );
        assert_eq!(hf_hub_cache(env(&[]), None), None);
    }

    /// A minimal safetensors file with one F16 tensor of `n` elements named `name`.
    fn write_safetensors(path: &Path, name: &str, n: usize) {
        let header = format!(
            r#"{{"{name}":{{"dtype":"F16","shape":[{n}],"data_offsets":[0,{}]}}}}"#,
            n * 2
        );
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend(header.as_bytes());
        bytes.extend(vec![0u8; n * 2]);
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn finds_files_skips_blobs_and_classifies() {
        let dir = tempfile::tempdir().unwrap();
        let snap = dir.path().join("models--x/snapshots/abc/vae");
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::create_dir_all(dir.path().join("models--x/blobs")).unwrap();
        write_safetensors(
            &snap.join("ae.safetensors"),
            "decoder.up.0.block.0.conv1.weight",
            8,
        );
        write_safetensors(&dir.path().join("models--x/blobs/x.safetensors"), "a", 2);
        std::fs::write(dir.path().join("notes.txt"), "x").unwrap();
        let found = find_weight_files(dir.path(), 8, 100);
        assert_eq!(found, vec![snap.join("ae.safetensors")]);

        let report = validate(Part::Vae, &found[0]).unwrap().unwrap();
        assert_eq!(stored_bytes(&report), 16);
        let err = validate(Part::Transformer, &found[0]).unwrap_err();
        assert!(err.contains("not the Transformer"), "{err}");
    }

    #[test]
    fn a_gguf_transformer_is_found_and_accepted_for_the_transformer_only() {
        let dir = tempfile::tempdir().unwrap();
        let fixture =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/flux_tiny_g.Q8_0.gguf");
        let path = dir.path().join("flux1-tiny-Q8_0.gguf");
        std::fs::copy(&fixture, &path).unwrap();
        assert_eq!(find_weight_files(dir.path(), 8, 100), vec![path.clone()]);
        let report = validate(Part::Transformer, &path).unwrap().unwrap();
        // Quantized blocks count as stored: less than f32 for every parameter.
        assert!(stored_bytes(&report) < 4 * report.parameters as u64);
        assert_eq!(stored_bytes(&report), report.loaded_bytes);
        let err = validate(Part::Vae, &path).unwrap_err();
        assert!(err.contains("not the"), "{err}");
    }

    #[test]
    fn tokenizer_files_are_checked_as_json() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("tokenizer.json");
        std::fs::write(&good, r#"{"model":{"type":"Unigram"}}"#).unwrap();
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, "[1,2]").unwrap();
        assert!(validate(Part::T5Tokenizer, &good).unwrap().is_none());
        assert!(validate(Part::T5Tokenizer, &bad).is_err());
    }

    #[test]
    fn spec_needs_every_required_part_and_sums_memory() {
        let dir = tempfile::tempdir().unwrap();
        let vae = dir.path().join("ae.safetensors");
        write_safetensors(&vae, "decoder.up.0.block.0.conv1.weight", 1000);
        let mut page = ModelsPage::default();
        page.choose(Part::Vae, vae.clone());
        assert_eq!(page.memory_estimate(), 2000);
        let err = page.spec().unwrap_err();
        assert_eq!(err, "choose the Transformer");
        // A wrong file is named in the error.
        page.choose(Part::Transformer, vae);
        assert!(
            page.spec()
                .unwrap_err()
                .starts_with("Transformer: this file holds")
        );
    }

    #[test]
    fn byte_sizes_read_well() {
        assert_eq!(format_bytes(23_800_000_000), "23.8 GB");
        assert_eq!(format_bytes(335_000_000), "335 MB");
        assert_eq!(format_bytes(16_000), "16 kB");
    }
}
