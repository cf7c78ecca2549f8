//! The policy corpus: each `corpus/NAME.cedar` with `corpus/NAME.cases.json`,
//! every case's decision and TTL checked.

use hallmark_policy::cases::{CaseFile, run};
use hallmark_policy::{Classes, PolicyEngine};

#[test]
fn corpus() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut files = 0;
    let mut cases = 0;
    let mut failures = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("cedar") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let engine = PolicyEngine::compile(&text, 1).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let cases_path = path.with_extension("cases.json");
        let file: CaseFile = serde_json::from_str(&std::fs::read_to_string(&cases_path).unwrap()).unwrap();
        for o in run(&engine, &Classes::default(), &file).unwrap() {
            cases += 1;
            if !o.pass {
                failures.push(format!("{}: {}: expected {}, got {}", path.display(), o.name, o.expected, o.got));
            }
        }
        files += 1;
    }
    assert!(files >= 3 && cases >= 15, "corpus too small: {files} files, {cases} cases");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The README's worked policy and its `cases.json` are the corpus's
/// `readme.cedar` and `readme.cases.json`, so the documented example is tested.
#[test]
fn readme_example_is_in_the_corpus() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("../../README.md")).unwrap();
    let block = |after: &str, fence: &str| {
        let at = readme.find(after).unwrap_or_else(|| panic!("README lost `{after}`"));
        let start = readme[at..].find(fence).unwrap() + at + fence.len();
        readme[start..start + readme[start..].find("```").unwrap()].to_owned()
    };
    let corpus = |name: &str| std::fs::read_to_string(root.join("tests/corpus").join(name)).unwrap();
    assert!(corpus("readme.cedar").ends_with(&block("### Worked example", "```cedar\n")));
    assert_eq!(corpus("readme.cases.json"), block("worked example above, `cases.json`", "```json\n"));
}
