//! `commscanctl` as a user runs it: settings it needs, and the offline commands.

use std::process::Command;

fn run(bin: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin)
        .args(args)
        .env_remove("COMMSCAN_TOKEN")
        .env_remove("COMMSCAN_CA")
        .env_remove("COMMSCAN_TOKEN_FILE")
        .output()
        .expect("run");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ctl(args: &[&str]) -> (bool, String, String) {
    run(env!("CARGO_BIN_EXE_commscanctl"), args)
}

#[test]
fn ctl_without_a_ca_says_which_setting_to_give() {
    let (ok, _, stderr) = ctl(&["devices"]);
    assert!(!ok);
    assert!(stderr.contains("set COMMSCAN_CA"), "{stderr}");
}

#[test]
fn ctl_catalog_list_json_has_ids() {
    let (ok, stdout, _) = ctl(&["catalog", "list", "--output", "json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let ids: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert!(ids.len() >= 60, "{}", ids.len());
    for id in ["zoom", "skype", "whatsapp", "kontur-tolk", "vk-teams"] {
        assert!(ids.contains(&id), "{id}");
    }
}

#[test]
fn ctl_policy_check_reports_every_problem_with_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.toml");
    std::fs::write(&p, "version = 1\nid = \"bad\"\nname = \"Bad\"\n\n[[rule]]\nid = \"r1\"\naction = \"deny\"\nproducts = [\"zoom\", \"zooom\"]\ncountries = [\"USA\"]\n\n[[waiver]]\nscope = \"device\"\ndevice = \"d\"\nproduct = \"zoom\"\nreason = \"x\"\napprover = \"y\"\n").unwrap();
    let (ok, _, stderr) = ctl(&["policy", "check", p.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        stderr.contains("bad.toml:8: rule[0].products: unknown product id 'zooom'"),
        "{stderr}"
    );
    assert!(
        stderr.contains("bad.toml:9: rule[0].countries: 'USA' is not an ISO 3166-1 alpha-2 code"),
        "{stderr}"
    );
    assert!(
        stderr.contains("waiver[0].expires: a waiver needs an expiry date"),
        "{stderr}"
    );
}

#[test]
fn ctl_policy_test_judges_a_saved_scan() {
    let dir = tempfile::tempdir().unwrap();
    let scan = dir.path().join("scan.json");
    std::fs::write(&scan, r#"{"platform":"linux","findings":[{"product":"whatsapp","installed":true,"running":false,"evidence":[{"source":"flatpak","detail":"app io.github.whatsapp"}]}]}"#).unwrap();
    let policy = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../policies/ministry-letter.toml"
    );
    let (ok, stdout, stderr) = ctl(&["policy", "test", policy, scan.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("noncompliant"), "{stdout}");
    assert!(
        stdout.contains(
            "whatsapp installed (flatpak: app io.github.whatsapp); denied by rule 'named-in-letter'"
        ),
        "{stdout}"
    );
    let other = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../policies/government-device-ban.toml"
    );
    let (ok, stdout, _) = ctl(&["policy", "test", other, scan.to_str().unwrap()]);
    assert!(ok);
    assert!(
        stdout.contains(": compliant"),
        "the same scan is fine where only WeChat is banned: {stdout}"
    );
}

#[test]
fn ctl_tokens_create_refuses_zero_uses_and_zero_lifetime_naming_the_flag() {
    let (ok, _, stderr) = ctl(&["tokens", "create", "--org", "acme", "--uses", "0"]);
    assert!(!ok);
    assert!(stderr.contains("--uses"), "{stderr}");
    assert!(stderr.contains("would allow no enrolment"), "{stderr}");
    let (ok, _, stderr) = ctl(&["tokens", "create", "--org", "acme", "--expires", "0s"]);
    assert!(!ok);
    assert!(stderr.contains("--expires"), "{stderr}");
    assert!(stderr.contains("would expire at once"), "{stderr}");
    // Neither reached for a connection: the refusal comes first.
    assert!(!stderr.contains("COMMSCAN_CA"), "{stderr}");
}

#[test]
fn ctl_writes_its_completions_and_man_pages_and_help_never_lists_those_commands() {
    let (ok, stdout, stderr) = ctl(&["completions", "bash"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("complete -F _commscanctl"), "{stdout}");
    assert!(stdout.contains("tokens") && !stdout.contains("completions"));
    let dir = tempfile::tempdir().unwrap();
    let (ok, stdout, stderr) = ctl(&["man", dir.path().to_str().unwrap()]);
    assert!(ok, "{stderr}");
    let page = dir.path().join("commscanctl-tokens-create.1");
    assert!(
        stdout.lines().any(|l| l == page.to_str().unwrap()),
        "{stdout}"
    );
    let roff = std::fs::read_to_string(&page).unwrap();
    assert!(
        roff.contains("\\-\\-expires"),
        "the page documents the flags: {roff}"
    );
    let (ok, _, stderr) = ctl(&["completions", "tcsh"]);
    assert!(!ok && stderr.contains("possible values"), "{stderr}");
    let (_, help, _) = ctl(&["--help"]);
    assert!(
        !help.contains("completions") && !help.contains(" man "),
        "{help}"
    );
}
