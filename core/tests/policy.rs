//! The policy language through time: staged enforcement, grace periods, waivers that expire by
//! themselves, and the two example policies shipped in `policies/`. Time is an argument, so
//! every instant here is chosen by the test.

use commscan_core::catalog::Catalog;
use commscan_core::policy::Policy;
use commscan_core::register::Registers;
use commscan_core::scan::{Evidence, Finding};
use commscan_core::verdict::{ReasonKind, Status, Subject, Verdict};
use std::collections::BTreeMap;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

fn load(text: &str) -> Policy {
    let c = Catalog::embedded();
    let r = Registers::embedded(&c).unwrap();
    Policy::parse("test.toml", text, &c, &r).unwrap_or_else(|e| panic!("{e}"))
}

fn example(name: &str) -> Policy {
    let path = format!("{}/../policies/{name}", env!("CARGO_MANIFEST_DIR"));
    let c = Catalog::embedded();
    let r = Registers::embedded(&c).unwrap();
    Policy::from_file(std::path::Path::new(&path), &c, &r).unwrap_or_else(|e| panic!("{e}"))
}

fn installed(product: &str) -> Finding {
    Finding {
        product: product.into(),
        installed: true,
        running: false,
        version: Some("1.0".into()),
        evidence: vec![Evidence {
            source: "dpkg".into(),
            detail: format!("package {product} 1.0"),
            signature: "dpkg".into(),
        }],
    }
}

fn running(product: &str) -> Finding {
    Finding {
        installed: false,
        running: true,
        ..installed(product)
    }
}

const FIRST_SEEN: OffsetDateTime = datetime!(2026-11-20 09:00 UTC);

fn judge_at(p: &Policy, device: &str, findings: &[Finding], now: OffsetDateTime) -> Verdict {
    let first_seen: BTreeMap<String, OffsetDateTime> = findings
        .iter()
        .map(|f| (f.product.clone(), FIRST_SEEN))
        .collect();
    p.judge(
        Subject {
            device_id: device,
            organisation: "acme",
            first_seen: &first_seen,
        },
        findings,
        now,
    )
}

const STAGED: &str = r#"
version = 1
id = "staged"
name = "Staged"
[[rule]]
id = "no-zoom"
action = "deny"
products = ["zoom"]
enforcement = "enforce"
[[rule]]
id = "slack-soon"
action = "deny"
products = ["slack"]
enforcement = "warn"
grace = "14d"
[[rule]]
id = "watch-discord"
action = "deny"
products = ["discord"]
enforcement = "notify"
"#;

#[test]
fn enforce_is_noncompliant_at_once_with_a_readable_reason() {
    let p = load(STAGED);
    let v = judge_at(&p, "d1", &[installed("zoom")], FIRST_SEEN);
    assert_eq!(v.status, Status::Noncompliant);
    assert_eq!(
        v.reasons[0].text,
        "zoom installed (dpkg: package zoom 1.0); denied by rule 'no-zoom' since 2026-11-20"
    );
}

#[test]
fn warn_becomes_noncompliant_only_after_its_grace_period() {
    let p = load(STAGED);
    let slack = [installed("slack")];
    let day = Duration::days(1);
    let within = judge_at(&p, "d1", &slack, FIRST_SEEN + 13 * day);
    assert_eq!(within.status, Status::Compliant);
    assert_eq!(within.reasons[0].kind, ReasonKind::Notice);
    assert!(
        within.reasons[0]
            .text
            .contains("noncompliant from 2026-12-04 unless removed"),
        "{}",
        within.reasons[0].text
    );
    let after = judge_at(&p, "d1", &slack, FIRST_SEEN + 14 * day);
    assert_eq!(after.status, Status::Noncompliant);
    assert!(
        after.reasons[0]
            .text
            .contains("grace period ended 2026-12-04"),
        "{}",
        after.reasons[0].text
    );
}

#[test]
fn notify_is_recorded_but_never_noncompliant() {
    let p = load(STAGED);
    let v = judge_at(
        &p,
        "d1",
        &[installed("discord")],
        FIRST_SEEN + Duration::days(400),
    );
    assert_eq!(v.status, Status::Compliant);
    assert_eq!(v.reasons.len(), 1);
    assert_eq!(v.reasons[0].kind, ReasonKind::Notice);
}

#[test]
fn grace_runs_from_first_sighting_not_from_the_scan() {
    let p = load(STAGED);
    // Never seen before: first sighting is now, so the grace period starts now.
    let v = p.judge(
        Subject {
            device_id: "d",
            organisation: "acme",
            first_seen: &BTreeMap::new(),
        },
        &[installed("slack")],
        FIRST_SEEN + Duration::days(100),
    );
    assert_eq!(v.status, Status::Compliant);
}

const WAIVED: &str = r#"
version = 1
id = "waived"
name = "Waived"
[[rule]]
id = "no-zoom"
action = "deny"
products = ["zoom", "skype"]
[[waiver]]
scope = "device"
device = "court-laptop"
product = "zoom"
reason = "hearings by Zoom until the domestic system is certified"
approver = "i.petrova"
expires = 2026-12-31
[[waiver]]
scope = "organisation"
organisation = "acme"
product = "skype"
reason = "legacy partner calls"
approver = "ciso"
expires = 2026-12-01T12:00:00Z
"#;

#[test]
fn device_waiver_covers_only_its_device_until_it_expires() {
    let p = load(WAIVED);
    let zoom = [installed("zoom")];
    let v = judge_at(&p, "court-laptop", &zoom, datetime!(2026-12-31 23:59 UTC));
    assert_eq!(v.status, Status::Waived);
    assert!(
        v.reasons[0]
            .text
            .contains("waived until 2027-01-01T00:00:00Z by i.petrova"),
        "{}",
        v.reasons[0].text
    );
    assert_eq!(
        judge_at(&p, "other-laptop", &zoom, datetime!(2026-12-01 00:00 UTC)).status,
        Status::Noncompliant
    );
    // The day after the expiry date, the waiver stops counting by itself.
    assert_eq!(
        judge_at(&p, "court-laptop", &zoom, datetime!(2027-01-01 00:00 UTC)).status,
        Status::Noncompliant
    );
}

#[test]
fn organisation_waiver_expires_at_its_instant() {
    let p = load(WAIVED);
    let skype = [installed("skype")];
    assert_eq!(
        judge_at(&p, "any", &skype, datetime!(2026-12-01 11:59 UTC)).status,
        Status::Waived
    );
    assert_eq!(
        judge_at(&p, "any", &skype, datetime!(2026-12-01 12:00 UTC)).status,
        Status::Noncompliant
    );
    let other_org = p.judge(
        Subject {
            device_id: "any",
            organisation: "globex",
            first_seen: &BTreeMap::new(),
        },
        &skype,
        datetime!(2026-11-25 00:00 UTC),
    );
    assert_eq!(other_org.status, Status::Noncompliant);
}

#[test]
fn a_waived_and_an_unwaived_violation_make_the_device_noncompliant() {
    let p = load(WAIVED);
    let v = judge_at(
        &p,
        "court-laptop",
        &[installed("zoom"), installed("wechat"), installed("skype")],
        datetime!(2026-11-25 00:00 UTC),
    );
    // zoom and skype waived, wechat allowed by default: waived overall.
    assert_eq!(v.status, Status::Waived);
    let p2 = load(&WAIVED.replace(
        "products = [\"zoom\", \"skype\"]",
        "products = [\"zoom\", \"skype\", \"wechat\"]",
    ));
    let v = judge_at(
        &p2,
        "court-laptop",
        &[installed("zoom"), installed("wechat")],
        datetime!(2026-11-25 00:00 UTC),
    );
    assert_eq!(v.status, Status::Noncompliant);
    assert_eq!(
        v.reasons[0].product, "wechat",
        "violations are listed before waived reasons"
    );
}

#[test]
fn running_only_policies_ignore_installed_but_idle_software() {
    let p = load(
        "version = 1\nid = \"r\"\nname = \"R\"\ncounts = \"running\"\n[[rule]]\nid = \"no-zoom\"\naction = \"deny\"\nproducts = [\"zoom\"]\n",
    );
    assert_eq!(
        judge_at(&p, "d", &[installed("zoom")], FIRST_SEEN).status,
        Status::Compliant
    );
    let v = judge_at(&p, "d", &[running("zoom")], FIRST_SEEN);
    assert_eq!(v.status, Status::Noncompliant);
    assert!(
        v.reasons[0].text.starts_with("zoom running"),
        "{}",
        v.reasons[0].text
    );
}

#[test]
fn default_deny_catches_catalogued_products_no_rule_names() {
    let p = load(
        "version = 1\nid = \"suite\"\nname = \"Approved suite only\"\ndefault_action = \"deny\"\n[[rule]]\nid = \"suite\"\naction = \"allow\"\nregisters = [\"example-corp-approved\"]\n",
    );
    assert_eq!(
        judge_at(&p, "d", &[installed("slack")], FIRST_SEEN).status,
        Status::Compliant
    );
    let v = judge_at(&p, "d", &[installed("telegram")], FIRST_SEEN);
    assert_eq!(v.status, Status::Noncompliant);
    assert!(
        v.reasons[0].text.contains("denied by the policy default"),
        "{}",
        v.reasons[0].text
    );
}

#[test]
fn ministry_letter_denies_named_apps_now_allows_the_register_and_phases_out_other_foreign_apps() {
    let p = example("ministry-letter.toml");
    let now = FIRST_SEEN + Duration::days(1);
    for named in ["zoom", "skype", "whatsapp"] {
        let v = judge_at(&p, "d", &[installed(named)], now);
        assert_eq!(v.status, Status::Noncompliant, "{named}");
        assert_eq!(v.reasons[0].rule, "named-in-letter");
    }
    for domestic in [
        "yandex-telemost",
        "yandex-messenger",
        "trueconf",
        "kontur-tolk",
        "vk-teams",
    ] {
        let v = judge_at(&p, "d", &[installed(domestic)], now);
        assert_eq!(v.status, Status::Compliant, "{domestic}");
        // Allowed through the register, whose listings are unverified: a notice says so.
        assert!(
            v.reasons
                .iter()
                .all(|r| r.kind == ReasonKind::Notice && r.text.contains("unverified")),
            "{domestic}: {:?}",
            v.reasons
        );
    }
    let telegram = [installed("telegram")];
    assert_eq!(
        judge_at(&p, "d", &telegram, now).status,
        Status::Compliant,
        "grace period"
    );
    let late = judge_at(&p, "d", &telegram, FIRST_SEEN + Duration::days(30));
    assert_eq!(late.status, Status::Noncompliant);
    assert_eq!(late.reasons[0].rule, "foreign-communication");
}

#[test]
fn government_device_ban_only_bans_its_one_app() {
    let p = example("government-device-ban.toml");
    assert_eq!(
        judge_at(&p, "d", &[installed("wechat")], FIRST_SEEN).status,
        Status::Noncompliant
    );
    let v = judge_at(
        &p,
        "d",
        &[
            installed("zoom"),
            installed("telegram"),
            installed("yandex-messenger"),
        ],
        FIRST_SEEN,
    );
    assert_eq!(v.status, Status::Compliant);
}

#[test]
fn policy_errors_are_all_reported_with_line_and_key() {
    let c = Catalog::embedded();
    let r = Registers::embedded(&c).unwrap();
    let text = "version = 1\nid = \"p\"\nname = \"P\"\n[[rule]]\nid = \"a\"\naction = \"deny\"\nproducts = [\"zooom\"]\nregisters = [\"nope\"]\nenforcement = \"warn\"\n[[rule]]\nid = \"a\"\naction = \"allow\"\n[[waiver]]\nscope = \"team\"\nproduct = \"zoom\"\nreason = \"r\"\napprover = \"a\"\nexpires = 2026-01-01\n";
    let err = Policy::parse("p.toml", text, &c, &r)
        .unwrap_err()
        .to_string();
    for needle in [
        "p.toml:7: rule[0].products: unknown product id 'zooom'",
        "p.toml:8: rule[0].registers: unknown register 'nope'",
        "rule[0].grace: enforcement 'warn' needs a grace period",
        "p.toml:11: rule[1].id: duplicate rule id 'a'",
        "rule[1].products: a rule needs at least one selector",
        "p.toml:14: waiver[0].scope: unknown scope 'team'",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in\n{err}");
    }
}

/// A policy of `rules` (TOML `[[rule]]` bodies) with the default allowing.
fn with_rules(rules: &[&str]) -> Policy {
    let mut text = String::from("version = 1\nid = \"families\"\nname = \"Families\"\n");
    for (i, r) in rules.iter().enumerate() {
        text.push_str(&format!("[[rule]]\nid = \"r{i}\"\n{r}\n"));
    }
    load(&text)
}

#[test]
fn a_rule_naming_a_product_selects_its_family_and_a_member_named_exactly_wins() {
    const DENY_TELEGRAM: &str = "action = \"deny\"\nproducts = [\"telegram\"]";
    const ALLOW_TELEGRAM: &str = "action = \"allow\"\nproducts = [\"telegram\"]";
    const DENY_MACOS: &str = "action = \"deny\"\nproducts = [\"telegram-macos\"]";
    const ALLOW_MACOS: &str = "action = \"allow\"\nproducts = [\"telegram-macos\"]";
    const ALLOW_MESSENGERS: &str = "action = \"allow\"\ncategories = [\"messenger\"]";
    const DENY_TEAMS: &str = "action = \"deny\"\nproducts = [\"microsoft-teams\"]";
    // (rules, product found, expected status, deciding rule, reason contains)
    let cases: &[(&[&str], &str, Status, &str, &str)] = &[
        // The issue's case: denying telegram catches the native macOS client.
        (
            &[DENY_TELEGRAM],
            "telegram-macos",
            Status::Noncompliant,
            "r0",
            "denied by rule 'r0' through family 'telegram' ('telegram-macos' is a member)",
        ),
        (
            &[DENY_TELEGRAM],
            "telegram",
            Status::Noncompliant,
            "r0",
            "denied by rule 'r0' since",
        ),
        // Naming the member alone is narrower: the root is not selected.
        (&[DENY_MACOS], "telegram", Status::Compliant, "", ""),
        (
            &[DENY_MACOS],
            "telegram-macos",
            Status::Noncompliant,
            "r0",
            "denied by rule 'r0' since",
        ),
        // A rule naming the member exactly beats a family match, before or after it.
        (
            &[DENY_TELEGRAM, ALLOW_MACOS],
            "telegram-macos",
            Status::Compliant,
            "",
            "",
        ),
        (
            &[ALLOW_MACOS, DENY_TELEGRAM],
            "telegram-macos",
            Status::Compliant,
            "",
            "",
        ),
        (
            &[DENY_TELEGRAM, ALLOW_MACOS],
            "telegram",
            Status::Noncompliant,
            "r0",
            "r0",
        ),
        (
            &[ALLOW_TELEGRAM, DENY_MACOS],
            "telegram-macos",
            Status::Noncompliant,
            "r1",
            "denied by rule 'r1' since",
        ),
        // Otherwise file order decides: an earlier category rule is not overtaken.
        (
            &[ALLOW_MESSENGERS, DENY_TELEGRAM],
            "telegram-macos",
            Status::Compliant,
            "",
            "",
        ),
        (
            &[DENY_TELEGRAM, ALLOW_MESSENGERS],
            "telegram-macos",
            Status::Noncompliant,
            "r0",
            "through family 'telegram'",
        ),
        // The other family in the catalog.
        (
            &[DENY_TEAMS],
            "microsoft-teams-free",
            Status::Noncompliant,
            "r0",
            "through family 'microsoft-teams'",
        ),
        // A family member of another product is not selected.
        (
            &[DENY_TELEGRAM],
            "microsoft-teams-free",
            Status::Compliant,
            "",
            "",
        ),
    ];
    for (rules, product, status, rule, text) in cases {
        let p = with_rules(rules);
        let v = judge_at(&p, "d", &[installed(product)], FIRST_SEEN);
        assert_eq!(v.status, *status, "{rules:?} on {product}: {v:?}");
        if rule.is_empty() {
            assert!(v.reasons.is_empty(), "{rules:?} on {product}: {v:?}");
        } else {
            assert_eq!(v.reasons[0].rule, *rule, "{rules:?} on {product}");
            assert_eq!(v.reasons[0].product, *product);
            assert!(
                v.reasons[0].text.contains(text),
                "{rules:?}: {}",
                v.reasons[0].text
            );
        }
    }
}

#[test]
fn policy_check_warns_when_a_member_takes_the_other_action_than_its_family() {
    const DENY_TELEGRAM: &str = "action = \"deny\"\nproducts = [\"telegram\"]";
    const ALLOW_MACOS: &str = "action = \"allow\"\nproducts = [\"telegram-macos\"]";
    const DENY_MACOS: &str = "action = \"deny\"\nproducts = [\"telegram-macos\"]";
    // (rules, warnings expected)
    let cases: &[(&[&str], usize)] = &[
        (&[DENY_TELEGRAM, ALLOW_MACOS], 1),
        // Same action: nothing to warn about.
        (&[DENY_TELEGRAM, DENY_MACOS], 0),
        // The member first: the root rule does not decide it, and the author saw that.
        (&[ALLOW_MACOS, DENY_TELEGRAM], 0),
        (&[DENY_TELEGRAM], 0),
    ];
    for (rules, n) in cases {
        let w = with_rules(rules).warnings();
        assert_eq!(w.len(), *n, "{rules:?}: {w:?}");
    }
    let w = with_rules(&[DENY_TELEGRAM, ALLOW_MACOS]).warnings();
    assert!(
        w[0].contains("rule[1] 'r1' allows 'telegram-macos', a member of family 'telegram' that earlier rule 'r0' denies"),
        "{w:?}"
    );
}

#[test]
fn a_waiver_for_a_product_covers_its_family_members_and_says_so() {
    let p = load(
        r#"
version = 1
id = "w"
name = "W"
[[rule]]
id = "no-telegram"
action = "deny"
products = ["telegram"]
[[waiver]]
scope = "device"
device = "d1"
product = "telegram"
reason = "press office"
approver = "i.petrova"
expires = 2027-01-31
"#,
    );
    let v = judge_at(&p, "d1", &[installed("telegram-macos")], FIRST_SEEN);
    assert_eq!(v.status, Status::Waived);
    assert!(
        v.reasons[0]
            .text
            .contains("waived through family 'telegram'"),
        "{}",
        v.reasons[0].text
    );
}

#[test]
fn reasons_relying_on_an_unverified_register_membership_say_so() {
    let p = with_rules(&[
        "action = \"deny\"\nregisters = [\"ru-domestic-software\"]\nenforcement = \"notify\"",
    ]);
    let v = judge_at(&p, "d", &[installed("vk-teams")], FIRST_SEEN);
    assert!(
        v.reasons[0].text.contains(
            "membership of register 'ru-domestic-software' unverified: no registry record number"
        ),
        "{}",
        v.reasons[0].text
    );
    // An allow resting on an unverified listing is a notice: still compliant, but visible.
    let p = example("ministry-letter.toml");
    let v = judge_at(&p, "d", &[installed("vk-teams")], FIRST_SEEN);
    assert_eq!(v.status, Status::Compliant);
    assert_eq!(v.reasons.len(), 1, "{v:?}");
    assert_eq!(v.reasons[0].kind, ReasonKind::Notice);
    assert!(
        v.reasons[0].text.contains(
            "allowed by rule 'domestic-register' through register 'ru-domestic-software', whose listing of it is unverified"
        ),
        "{}",
        v.reasons[0].text
    );
    // A register an organisation keeps itself needs no record numbers.
    let p = with_rules(&["action = \"deny\"\nregisters = [\"example-corp-approved\"]"]);
    let v = judge_at(&p, "d", &[installed("zoom")], FIRST_SEEN);
    assert!(
        !v.reasons[0].text.contains("unverified"),
        "{}",
        v.reasons[0].text
    );
}
