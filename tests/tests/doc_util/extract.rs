//! Finding the examples: `msb …` lines in README.md's ```sh blocks and in
//! the `Examples:` sections of every `--help` text, as the shell would
//! split them.

use std::path::Path;
use std::process::Command;

/// One example as a user reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    /// Where it is written (`README.md:17`, `msb run --help`).
    pub at: String,
    /// The command line, its trailing comment removed.
    pub line: String,
}

/// The examples of one code block or one `--help` text, in order: a story
/// whose lines may depend on the ones before.
#[derive(Debug, Clone)]
pub struct Block {
    /// Where the block is.
    pub at: String,
    /// Its examples.
    pub examples: Vec<Example>,
}

/// `line` without a trailing `# comment` (a `#` at a word start outside
/// quotes).
pub fn strip_comment(line: &str) -> String {
    let mut quote = None;
    let mut prev_space = true;
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '#') if prev_space => return line[..i].trim_end().to_string(),
            _ => {}
        }
        prev_space = c.is_whitespace();
    }
    line.trim_end().to_string()
}

/// The simple commands of `line` (split at `;`, `&&`, `||`, `|` outside
/// quotes), each as its words with quotes removed.
pub fn commands(line: &str) -> Vec<Vec<String>> {
    let mut out = vec![Vec::new()];
    let mut word: Option<String> = None;
    let mut quote = None;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.get_or_insert_with(String::new).push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                word.get_or_insert_with(String::new);
            }
            (None, ';' | '|' | '&') => {
                if let Some(w) = word.take() {
                    out.last_mut().unwrap().push(w);
                }
                if matches!(chars.peek(), Some('|' | '&')) {
                    chars.next();
                }
                out.push(Vec::new());
            }
            (None, c) if c.is_whitespace() => {
                if let Some(w) = word.take() {
                    out.last_mut().unwrap().push(w);
                }
            }
            (None, c) => word.get_or_insert_with(String::new).push(c),
        }
    }
    if let Some(w) = word.take() {
        out.last_mut().unwrap().push(w);
    }
    out.retain(|c| !c.is_empty());
    out
}

/// Whether `line` runs `msb` (first word of one of its commands).
pub fn invokes_msb(line: &str) -> bool {
    commands(line).iter().any(|c| c[0] == "msb")
}

/// Whether `text` ends inside a quote or with a line continuation.
fn continues(text: &str) -> bool {
    let mut quote = None;
    for c in text.chars() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            _ => {}
        }
    }
    quote.is_some() || text.ends_with('\\')
}

/// The examples of README.md's ```sh blocks that run `msb`, one block per
/// fence. Every command line of such a block is an example (a `curl` to
/// `msb serve` belongs to the story); a line continued (open quote, `\`)
/// is joined with the next.
pub fn readme_blocks(path: &Path) -> Vec<Block> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut blocks: Vec<Block> = Vec::new();
    let mut fence: Option<bool> = None;
    let mut pending: Option<Example> = None;
    for (i, line) in text.lines().enumerate() {
        let at = format!("README.md:{}", i + 1);
        if let Some(lang) = line.trim_start().strip_prefix("```") {
            if let (Some(p), Some(b)) = (pending.take(), blocks.last_mut()) {
                // Never closed: run as written (and fail).
                b.examples.push(p);
            }
            fence = match fence {
                Some(_) => None,
                None => {
                    let sh = lang.trim() == "sh";
                    if sh {
                        blocks.push(Block {
                            at: at.clone(),
                            examples: Vec::new(),
                        });
                    }
                    Some(sh)
                }
            };
            continue;
        }
        if fence != Some(true) {
            continue;
        }
        let mut ex = match pending.take() {
            Some(mut p) => {
                p.line.push('\n');
                p.line.push_str(line);
                p
            }
            None => Example {
                at,
                line: line.to_string(),
            },
        };
        if continues(&strip_comment(&ex.line)) {
            pending = Some(ex);
            continue;
        }
        ex.line = strip_comment(&ex.line);
        if !ex.line.trim().is_empty() {
            blocks.last_mut().expect("inside a block").examples.push(ex);
        }
    }
    blocks.retain(|b| b.examples.iter().any(|e| invokes_msb(&e.line)));
    blocks
}

/// `msb ARGS --help`.
fn help(msb: &Path, args: &[String]) -> String {
    let out = Command::new(msb)
        .args(args)
        .arg("--help")
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", msb.display()));
    assert!(
        out.status.success(),
        "msb {} --help failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The subcommand names a help text lists under `Commands:`.
fn subcommands(text: &str) -> Vec<String> {
    text.lines()
        .skip_while(|l| l.trim_end() != "Commands:")
        .skip(1)
        .take_while(|l| l.starts_with(' '))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|c| c != "help")
        .collect()
}

/// The lines of a help text's `Examples:` section that run `msb`.
pub fn help_examples(text: &str, at: &str) -> Vec<Example> {
    text.lines()
        .skip_while(|l| l.trim_end() != "Examples:")
        .skip(1)
        .take_while(|l| l.starts_with(' '))
        .map(|l| strip_comment(l.trim()))
        .filter(|l| invokes_msb(l))
        .map(|line| Example {
            at: at.to_string(),
            line,
        })
        .collect()
}

/// One block per help text of `msb` and of every subcommand, depth first.
pub fn help_blocks(msb: &Path) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut pending: Vec<Vec<String>> = vec![Vec::new()];
    while let Some(path) = pending.pop() {
        let text = help(msb, &path);
        let at = format!(
            "msb {}--help",
            path.iter().map(|p| format!("{p} ")).collect::<String>()
        );
        let examples = help_examples(&text, &at);
        if !examples.is_empty() {
            blocks.push(Block { at, examples });
        }
        for sub in subcommands(&text).into_iter().rev() {
            let mut p = path.clone();
            p.push(sub);
            pending.push(p);
        }
    }
    blocks
}

#[test]
fn examples_are_split_as_the_shell_would() {
    assert_eq!(
        strip_comment("msb run -- sh -c 'echo #1'   # a comment"),
        "msb run -- sh -c 'echo #1'"
    );
    assert_eq!(
        strip_comment("msb pull a@sha256:x#y"),
        "msb pull a@sha256:x#y"
    );
    assert_eq!(
        commands("echo hi | msb run -i -- cat; msb ls && msb inspect 'a b'"),
        [
            vec!["echo", "hi"],
            vec!["msb", "run", "-i", "--", "cat"],
            vec!["msb", "ls"],
            vec!["msb", "inspect", "a b"]
        ]
    );
    assert!(invokes_msb("echo data | msb exec -i dev -- wc -c"));
    assert!(continues("curl -d '{\"a\": 1,"));
    assert!(!continues("curl -d '{\"a\": 1}' http://x"));
    assert!(!continues(&strip_comment(
        "msb run --image x   # the image's Cmd"
    )));
    assert!(!invokes_msb("virtiofsd-msb --shared-dir /srv"));
    assert!(!invokes_msb(
        "scripts/setup.sh && cargo run -p launcher --bin msb -- run"
    ));
    let text = "Usage: msb run\n\nExamples:\n  msb run -- true   # c\n  msb ls\n\nExit status: 2\n";
    let ex = help_examples(text, "msb run --help");
    assert_eq!(ex.len(), 2);
    assert_eq!(ex[0].line, "msb run -- true");
}
