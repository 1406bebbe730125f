//! `gridwatch check` on a broken configuration reports every problem with file, line and field.

use std::process::Command;

use crate::support::{line_of, repo};

#[test]
fn check_reports_every_problem_with_its_line() {
    let path = repo("tests/data/broken/key-area.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gridwatch"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "exit code; stderr:\n{stderr}");

    let expect = [
        ("colour = ", "unknown field `colour`", "groups[0].colour"),
        (
            "[[0.1, 0.1], [0.9, 0.9]]",
            "at least 3 points",
            "cameras[0].zones[0].polygon",
        ),
        (
            "unit = \"nowhere\"",
            "unknown management unit `nowhere`",
            "cameras[1].unit",
        ),
        (
            "card = \"missing-model.toml\"",
            "no-such-model.onnx not found",
            "model.card",
        ),
    ];
    for (marker, message, field) in expect {
        let line = line_of(&text, marker);
        let found = stderr
            .lines()
            .find(|l| l.contains(message))
            .unwrap_or_else(|| panic!("no `{message}` in:\n{stderr}"));
        assert!(
            found.contains(&format!("key-area.toml:{line}:")),
            "`{message}` should be reported at line {line}: {found}"
        );
        assert!(
            found.contains(&format!("`{field}`")),
            "`{message}` should name field {field}: {found}"
        );
    }
    assert!(
        stderr.contains("4 problem(s)"),
        "exactly the four problems:\n{stderr}"
    );
}

#[test]
fn the_embedded_default_passes_check() {
    let out = Command::new(env!("CARGO_BIN_EXE_gridwatch"))
        .arg("check")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("9 units"), "{stdout}");
}

#[test]
fn a_toml_syntax_error_names_its_line() {
    let dir = crate::support::TempDir::new("syntax");
    let path = dir.path("bad.toml");
    std::fs::write(&path, "[centre]\nname = \"x\"\n\n[model\ncard = 1\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gridwatch"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("bad.toml:4:"), "{stderr}");
}
