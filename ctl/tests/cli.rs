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
fn ctl_policy_test_denying_telegram_catches_the_native_macos_client() {
    let dir = tempfile::tempdir().unwrap();
    let scan = dir.path().join("scan.json");
    std::fs::write(&scan, r#"{"platform":"macos","findings":[{"product":"telegram-macos","installed":true,"running":false,"evidence":[{"source":"macos_app","detail":"app Telegram.app ru.keepcoder.Telegram 11.3 (system)","signature":"bundle_id"}]}]}"#).unwrap();
    let policy = dir.path().join("policy.toml");
    // (rules, expected status, expected reason text)
    let cases = [
        (
            "[[rule]]\nid = \"no-telegram\"\naction = \"deny\"\nproducts = [\"telegram\"]\n",
            ": noncompliant",
            "denied by rule 'no-telegram' through family 'telegram' ('telegram-macos' is a member)",
        ),
        (
            "[[rule]]\nid = \"no-telegram\"\naction = \"deny\"\nproducts = [\"telegram\"]\n\
             [[rule]]\nid = \"mac-ok\"\naction = \"allow\"\nproducts = [\"telegram-macos\"]\n",
            ": compliant",
            "",
        ),
    ];
    for (rules, status, reason) in cases {
        std::fs::write(
            &policy,
            format!("version = 1\nid = \"p\"\nname = \"P\"\n{rules}"),
        )
        .unwrap();
        let (ok, stdout, stderr) = ctl(&[
            "policy",
            "test",
            policy.to_str().unwrap(),
            scan.to_str().unwrap(),
        ]);
        assert!(ok, "{stderr}");
        assert!(stdout.contains(status), "{rules}: {stdout}");
        assert!(stdout.contains(reason), "{rules}: {stdout}");
    }
    // The second policy splits the family: `policy check` says so, and still accepts it.
    let (ok, _, stderr) = ctl(&["policy", "check", policy.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("warning: rule[1] 'mac-ok' allows 'telegram-macos', a member of family 'telegram' that earlier rule 'no-telegram' denies"),
        "{stderr}"
    );
}

#[test]
fn ctl_catalog_show_lists_family_members_and_unverified_register_listings() {
    // (product, text expected in `catalog show`)
    let cases = [
        (
            "telegram",
            "family members: telegram-macos (Telegram for macOS)",
        ),
        ("telegram-macos", "family: member of telegram"),
        ("microsoft-teams", "family members: microsoft-teams-free"),
        (
            "vk-teams",
            "register: ru-domestic-software (UNVERIFIED: no registry record number from a public source)",
        ),
        ("zoom", "register: example-corp-approved\n"),
    ];
    for (id, expected) in cases {
        let (ok, stdout, stderr) = ctl(&["catalog", "show", id]);
        assert!(ok, "{stderr}");
        assert!(stdout.contains(expected), "{id}: {stdout}");
    }
    let (ok, stdout, _) = ctl(&["catalog", "show", "vk-teams", "--output", "json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["registers"][0]["verified"], false, "{v}");
    let (_, stdout, _) = ctl(&["catalog", "show", "telegram", "--output", "json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["members"], serde_json::json!(["telegram-macos"]));
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

/// The `checked` examples of POLICY.md: (name, TOML text).
fn policy_examples() -> Vec<(String, String)> {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../POLICY.md")).unwrap();
    let mut out = Vec::new();
    let mut lines = doc.lines();
    while let Some(line) = lines.next() {
        let Some(name) = line
            .strip_prefix("<!-- checked: ")
            .and_then(|r| r.strip_suffix(" -->"))
        else {
            continue;
        };
        assert_eq!(
            lines.next(),
            Some("```toml"),
            "{name}: a toml block follows"
        );
        let body: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
        out.push((name.to_owned(), body.join("\n") + "\n"));
    }
    out
}

#[test]
fn every_policy_example_in_policy_md_passes_policy_check() {
    let examples = policy_examples();
    let names: Vec<&str> = examples.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "ministry-letter",
            "bank-approved-suite",
            "government-device-ban"
        ]
    );
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in &examples {
        let p = dir.path().join(format!("{name}.toml"));
        std::fs::write(&p, text).unwrap();
        let (ok, stdout, stderr) = ctl(&["policy", "check", p.to_str().unwrap()]);
        assert!(ok, "{name}: {stdout}{stderr}");
        assert!(!stderr.contains("warning"), "{name}: {stderr}");
    }
    // The seed's letter is quoted word for word.
    let letter = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../policies/ministry-letter.toml"
    ))
    .unwrap();
    assert_eq!(examples[0].1, letter);
}

#[test]
fn the_bank_example_denies_what_is_not_approved_and_allows_teams() {
    let (_, bank) = policy_examples()
        .into_iter()
        .find(|(n, _)| n == "bank-approved-suite")
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("bank.toml");
    std::fs::write(&policy, bank).unwrap();
    // (product found, expected status)
    for (product, status) in [
        ("microsoft-teams", ": compliant"),
        ("zoom", ": noncompliant"),
    ] {
        let scan = dir.path().join(format!("{product}.json"));
        std::fs::write(&scan, format!(r#"{{"platform":"linux","findings":[{{"product":"{product}","installed":true,"running":false,"evidence":[{{"source":"dpkg","detail":"package {product}"}}]}}]}}"#)).unwrap();
        let (ok, stdout, stderr) = ctl(&[
            "policy",
            "test",
            policy.to_str().unwrap(),
            scan.to_str().unwrap(),
        ]);
        assert!(ok, "{stderr}");
        assert!(stdout.contains(status), "{product}: {stdout}");
    }
}
