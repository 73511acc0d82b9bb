//! The loader never panics: generated projects, then mutated (byte flips, truncations,
//! insertions, deletions), plus raw bytes, all go through the parser and must give a project
//! or an error.
//!
//! Short run (CI): 2000 cases per property. Long run, >= 100k cases:
//! `PROPTEST_CASES=100000 cargo test --locked --test project_fuzz`

use std::path::Path;

use proptest::prelude::*;
use storyloom::project::analysis::matches_from_csv;
use storyloom::project::migrate::parse_project;
use storyloom::project::store::to_ron_string;
use storyloom::project::{Frame, FrameVersion, Project};

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000)
}

fn arb_project() -> impl Strategy<Value = Project> {
    let frame = (
        any::<u64>(),
        ".{0,12}",
        ".{0,12}",
        any::<u32>(),
        any::<bool>(),
        proptest::option::of(".{0,8}"),
    )
        .prop_map(|(id, action, dialogue, duration_ms, locked, file)| {
            let mut f = Frame::new(id, id.rotate_left(7));
            f.action = action;
            f.dialogue = dialogue;
            f.duration_ms = duration_ms;
            f.seed_locked = locked;
            if let Some(file) = file {
                f.versions.push(FrameVersion {
                    file,
                    guidance: (duration_ms as f32).sqrt(),
                    ..FrameVersion::default()
                });
                f.active_version = Some(0);
            }
            f
        });
    (".{0,16}", ".{0,16}", prop::collection::vec(frame, 0..4)).prop_map(
        |(title, identity, frames)| {
            let mut p = Project {
                title,
                frames,
                ..Project::default()
            };
            p.identity.prompt = identity;
            p
        },
    )
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip {
        at: usize,
        bit: u8,
    },
    Truncate {
        at: usize,
    },
    Insert {
        at: usize,
        bytes: Vec<u8>,
    },
    Delete {
        at: usize,
        len: usize,
    },
    /// Insert text that is meaningful to RON, to get past the tokenizer more often.
    InsertToken {
        at: usize,
        token: usize,
    },
}

const TOKENS: &[&str] = &[
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    ",",
    ":",
    "\"",
    "Some(",
    "None",
    "-1",
    "1e999",
    "NaN",
    "18446744073709551616",
    "format_version: 0,",
    "format_version: 99,",
    "r#\"",
    "'",
    "/*",
    "//",
    "\\u{110000}",
    "true",
    "()",
];

fn arb_mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..6))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<usize>(), 1usize..40).prop_map(|(at, len)| Mutation::Delete { at, len }),
        (any::<usize>(), 0..TOKENS.len())
            .prop_map(|(at, token)| Mutation::InsertToken { at, token }),
    ]
}

fn apply(bytes: &mut Vec<u8>, mutation: &Mutation) {
    let len = bytes.len();
    let pos = |at: usize| if len == 0 { 0 } else { at % (len + 1) };
    match mutation {
        Mutation::Flip { at, bit } => {
            if len > 0 {
                bytes[at % len] ^= 1 << bit;
            }
        }
        Mutation::Truncate { at } => bytes.truncate(pos(*at)),
        Mutation::Insert { at, bytes: new } => {
            let p = pos(*at);
            bytes.splice(p..p, new.iter().copied());
        }
        Mutation::Delete { at, len: n } => {
            let p = pos(*at);
            let end = (p + n).min(len);
            bytes.drain(p..end);
        }
        Mutation::InsertToken { at, token } => {
            let p = pos(*at);
            bytes.splice(p..p, TOKENS[*token].bytes());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn generated_projects_load_back_equal(project in arb_project()) {
        let text = to_ron_string(&project).unwrap();
        let loaded = parse_project(Path::new("project.ron"), text.as_bytes()).unwrap();
        prop_assert_eq!(loaded, project);
    }

    #[test]
    fn mutated_projects_never_panic(
        project in arb_project(),
        mutations in prop::collection::vec(arb_mutation(), 1..6),
    ) {
        let mut bytes = to_ron_string(&project).unwrap().into_bytes();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        // Either outcome is fine; a panic fails the test.
        if let Ok(p) = parse_project(Path::new("project.ron"), &bytes) {
            prop_assert_eq!(p.format_version, 1);
        }
    }

    #[test]
    fn raw_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = parse_project(Path::new("project.ron"), &bytes);
    }

    #[test]
    fn mutated_match_files_never_panic(
        text in "frame_token,identity_token,similarity\n([0-9]{1,3},[0-9]{1,3},[-0-9.e]{1,6}\n){0,4}",
        mutations in prop::collection::vec(arb_mutation(), 0..3),
    ) {
        let mut bytes = text.into_bytes();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        let text = String::from_utf8_lossy(&bytes);
        let _ = matches_from_csv(Path::new("m.csv"), &text);
    }
}
