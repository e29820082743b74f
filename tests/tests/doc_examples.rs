//! Every `msb …` example a user reads runs: the lines of README.md's
//! ```sh blocks and of the `Examples:` section of every `--help` text
//! (found by walking `msb --help`), each run as written by `sh -c` in a
//! directory holding the fixtures they name, with a private `MSB_HOME`
//! (see `doc_util::fixtures`). An example that does not exit 0 fails the
//! test. The lines of one block run in order (a later line may use what an
//! earlier one made); a line written twice runs once. Only the docs'
//! registry (`127.0.0.1:5000`) and digest (`sha256:…`) placeholders are
//! replaced, by the test registry's. A `curl` to `msb serve` that gets an
//! API error back (`{"code", "message", …}`, which curl itself exits 0
//! with) fails too. Boots a few dozen VMs: several minutes
//! under TCG.

mod doc_util;
mod image_util;

use std::collections::HashSet;
use std::time::Duration;

use doc_util::extract::{commands, help_blocks, readme_blocks, Example};
use doc_util::fixtures::Fixtures;
use msb_tests::msb_proc::msb_binary;

#[test]
fn every_example_in_the_readme_and_the_help_runs() {
    let msb = msb_binary().unwrap_or_else(|e| panic!("{e}"));
    let mut blocks = readme_blocks(&image_util::workspace().join("README.md"));
    blocks.extend(help_blocks(&msb));
    let all: Vec<Example> = blocks.iter().flat_map(|b| b.examples.clone()).collect();
    assert!(
        all.len() >= 20,
        "found only {} examples: is the extraction broken?\n{all:#?}",
        all.len()
    );
    let mut fx = Fixtures::new(&all);
    let mut seen = HashSet::new();
    let mut failures = Vec::new();
    let mut ran = 0;
    for block in &blocks {
        for ex in &block.examples {
            if !seen.insert(ex.line.clone()) {
                continue;
            }
            let line = fx.resolve(&ex.line);
            fx.prepare(&line);
            let r = fx.run(&line);
            ran += 1;
            eprintln!("[{}] exit {}: {}", ex.at, r.code, ex.line);
            if std::env::var_os("MSB_DOCS_ECHO").is_some() {
                eprintln!("{}", r.describe());
            }
            if r.code != 0 || api_error(&line, &r.stdout) {
                failures.push(format!(
                    "{} (block at {}): `{}`\n{}",
                    ex.at,
                    block.at,
                    ex.line,
                    r.describe()
                ));
            }
        }
        fx.end_block();
    }
    assert!(
        failures.is_empty(),
        "{} of {ran} examples failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    fx.env.assert_clean(Duration::from_secs(20));
}

/// Whether `line` runs curl and `stdout` is an error answer of the API.
fn api_error(line: &str, stdout: &str) -> bool {
    commands(line).iter().any(|c| c[0] == "curl")
        && serde_json::from_str::<serde_json::Value>(stdout.trim())
            .is_ok_and(|v| v.get("code").is_some() && v.get("message").is_some())
}
