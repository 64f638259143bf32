//! The generated trees the bench scans, in the formats the sources' own tests use
//! (`agent/tests/linux_tree.rs`, the tests in `agent/src/sources/macos_app.rs`).
//!
//! Everything is deterministic (a fixed-seed xorshift), so two runs scan the same bytes.
//! Catalogued names are taken from the embedded catalog itself, so the fixture keeps matching
//! when the catalog grows.

use commscan_core::catalog::{Catalog, SignatureKind};
use plist::{Dictionary, Value};
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

/// Packages in the dpkg status file.
pub const PACKAGES: usize = 5_000;
/// Desktop entries, system and per-user.
pub const DESKTOP_ENTRIES: usize = 300;
/// `.app` bundles, system and per-user.
pub const APP_BUNDLES: usize = 200;
/// Process names fed through `process::items_from_names`.
pub const PROCESSES: usize = 1_000;

/// A small deterministic generator; quality does not matter, reproducibility does.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len())]
    }
}

const WORDS: [&str; 40] = [
    "the",
    "library",
    "provides",
    "support",
    "for",
    "data",
    "files",
    "and",
    "tools",
    "used",
    "by",
    "applications",
    "that",
    "handle",
    "network",
    "protocols",
    "with",
    "shared",
    "runtime",
    "components",
    "this",
    "package",
    "contains",
    "development",
    "headers",
    "documentation",
    "plugins",
    "bindings",
    "python",
    "module",
    "interface",
    "system",
    "service",
    "daemon",
    "configuration",
    "utilities",
    "common",
    "fonts",
    "locale",
    "translations",
];
const PREFIXES: [&str; 12] = [
    "lib", "python3-", "fonts-", "gir1.2-", "node-", "r-cran-", "libghc-", "golang-", "perl-",
    "ruby-", "php-", "texlive-",
];
const STEMS: [&str; 16] = [
    "gtk", "qt", "x11", "ssl", "xml", "json", "http", "crypt", "sound", "image", "font", "dbus",
    "glib", "sql", "mail", "video",
];
const SECTIONS: [&str; 8] = [
    "libs",
    "python",
    "fonts",
    "devel",
    "utils",
    "net",
    "doc",
    "javascript",
];
const MAINTAINERS: [&str; 4] = [
    "Debian QA Group <packages@qa.debian.org>",
    "Jörg Müller <joerg@example.org>",
    "Ubuntu Developers <ubuntu-devel-discuss@lists.ubuntu.com>",
    "Debian Python Team <team+python@tracker.debian.org>",
];

fn sentence(rng: &mut Rng, words: usize) -> String {
    let mut s = String::new();
    for i in 0..words {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(rng.pick(&WORDS));
    }
    s
}

/// The first value of `kind` of each product, at most `n`: catalogued names a real machine
/// could hold.
fn catalogued(catalog: &Catalog, kind: SignatureKind, n: usize) -> Vec<String> {
    let mut seen = BTreeSet::new();
    catalog
        .values_of(kind)
        .filter(|(product, value)| !value.contains('*') && seen.insert(product.to_string()))
        .map(|(_, value)| value.to_owned())
        .take(n)
        .collect()
}

fn write(root: &Path, rel: &str, bytes: impl AsRef<[u8]>) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, bytes).unwrap();
}

/// A dpkg status file of [`PACKAGES`] paragraphs shaped like a real one: the usual fields,
/// long `Depends`, multi-line descriptions, some `Conffiles`, a few removed packages with
/// configuration left (`deinstall ok config-files`, not installations); the catalogued
/// packages spread evenly among them.
fn dpkg_status(catalog: &Catalog, rng: &mut Rng) -> String {
    let real = catalogued(catalog, SignatureKind::Dpkg, 30);
    let stride = PACKAGES / real.len().max(1);
    let mut names = BTreeSet::new();
    let mut out = String::with_capacity(PACKAGES * 1_500);
    for i in 0..PACKAGES {
        let name = if i % stride == 7 && i / stride < real.len() {
            real[i / stride].clone()
        } else {
            loop {
                let n = format!(
                    "{}{}{}-{}",
                    rng.pick(&PREFIXES),
                    rng.pick(&STEMS),
                    rng.pick(&["", "mm", "-utils", "-common", "-dev", "-data"]),
                    rng.below(400)
                );
                if !names.contains(&n) {
                    break n;
                }
            }
        };
        names.insert(name.clone());
        let status = if rng.below(40) == 0 {
            "deinstall ok config-files"
        } else {
            "install ok installed"
        };
        let version = format!(
            "{}.{}.{}-{}",
            rng.below(10),
            rng.below(30),
            rng.below(100),
            rng.below(5) + 1
        );
        let _ = writeln!(out, "Package: {name}\nStatus: {status}");
        let _ = writeln!(
            out,
            "Priority: optional\nSection: {}\nInstalled-Size: {}",
            rng.pick(&SECTIONS),
            rng.below(50_000) + 10
        );
        let _ = writeln!(out, "Maintainer: {}", rng.pick(&MAINTAINERS));
        let _ = writeln!(out, "Architecture: amd64");
        if rng.below(2) == 0 {
            let _ = writeln!(out, "Multi-Arch: same");
        }
        let _ = writeln!(out, "Version: {version}");
        let deps: Vec<String> = (0..rng.below(12) + 1)
            .map(|_| {
                format!(
                    "lib{}{} (>= {}.{})",
                    rng.pick(&STEMS),
                    rng.below(10),
                    rng.below(5),
                    rng.below(20)
                )
            })
            .collect();
        let _ = writeln!(out, "Depends: {}", deps.join(", "));
        if status.ends_with("config-files") || rng.below(8) == 0 {
            let _ = writeln!(out, "Conffiles:");
            for c in 0..rng.below(4) + 1 {
                let _ = writeln!(
                    out,
                    " /etc/{name}/conf{c}.d/default.conf {:032x}",
                    rng.next() as u128 * rng.next() as u128
                );
            }
        }
        let _ = writeln!(out, "Description: {}", sentence(rng, 6));
        for line in 0..rng.below(14) + 2 {
            if line % 5 == 4 {
                let _ = writeln!(out, " .");
            } else {
                let _ = writeln!(out, " {}", sentence(rng, 11));
            }
        }
        let _ = writeln!(out, "Homepage: https://example.org/{name}\n");
    }
    out
}

fn desktop_entry(rng: &mut Rng, id: &str, exec: &str, categories: &str) -> String {
    let name = id.rsplit('.').next().unwrap_or(id);
    let mut s = format!(
        "[Desktop Entry]\nVersion=1.0\nType=Application\nName={name}\nGenericName={}\n",
        sentence(rng, 2)
    );
    for lang in ["de", "fr", "ru", "es", "ja", "pt_BR", "zh_CN", "uk"] {
        let _ = writeln!(
            s,
            "Name[{lang}]={name}\nComment[{lang}]={}",
            sentence(rng, 7)
        );
    }
    let _ = writeln!(
        s,
        "Comment={}\nExec={exec} %U\nIcon={name}\nTerminal=false\nCategories={categories}\n\
         MimeType=x-scheme-handler/{};\nStartupNotify=true\n\n\
         [Desktop Action new-window]\nName=New Window\nExec={exec} --new-window\n",
        sentence(rng, 8),
        name.to_lowercase()
    );
    s
}

/// A Linux tree: `/etc/passwd` with one user, the dpkg status file, and
/// [`DESKTOP_ENTRIES`] desktop entries (a fifth in alice's `~/.local/share/applications`,
/// some in a vendor subfolder, a few catalogued, a few unknown `InstantMessaging` apps).
/// Returns the status file's size in bytes.
pub fn linux(root: &Path, catalog: &Catalog) -> usize {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    write(
        root,
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000:Alice:/home/alice:/bin/bash\n",
    );
    write(root, "etc/os-release", "ID=debian\nVERSION_ID=12\n");
    let status = dpkg_status(catalog, &mut rng);
    write(root, "var/lib/dpkg/status", &status);

    let known = catalogued(catalog, SignatureKind::Desktop, 10);
    for i in 0..DESKTOP_ENTRIES {
        let (id, exec, categories) = if i < known.len() {
            (known[i].clone(), "/usr/bin/app".to_owned(), "Network;Chat;")
        } else if i % 60 == 11 {
            (
                format!("org.example.Chatter{i}"),
                format!("/opt/chatter{i}/chatter"),
                "Network;InstantMessaging;",
            )
        } else {
            (
                format!("org.example.Tool{i}"),
                format!("/usr/bin/tool{i}"),
                "Utility;GTK;",
            )
        };
        let dir = match i % 5 {
            0 => "home/alice/.local/share/applications",
            // A vendor subfolder makes the id `kde-<name>`: no catalogued entry there.
            1 if i % 3 == 0 && i >= known.len() => "usr/share/applications/kde",
            _ => "usr/share/applications",
        };
        write(
            root,
            &format!("{dir}/{id}.desktop"),
            desktop_entry(&mut rng, &id, &exec, categories),
        );
    }
    status.len()
}

/// [`PROCESSES`] executable names as a busy desktop's process table shows them: many
/// repeated (`kworker`, `bash`), a few catalogued (`linux_exe` names from the catalog).
pub fn process_names(catalog: &Catalog) -> Vec<String> {
    let known = catalogued(catalog, SignatureKind::LinuxExe, 12);
    let common = [
        "kworker",
        "bash",
        "systemd",
        "sshd",
        "chrome",
        "Xorg",
        "pipewire",
        "gnome-shell",
    ];
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    (0..PROCESSES)
        .map(|i| {
            if i % 80 == 3 && i / 80 < known.len() {
                known[i / 80].clone()
            } else if rng.below(3) == 0 {
                rng.pick(&common).to_owned()
            } else {
                format!("worker-{}", rng.below(800))
            }
        })
        .collect()
}

fn info_plist(rng: &mut Rng, id: &str, name: &str, category: &str, binary: bool) -> Vec<u8> {
    let mut d = Dictionary::new();
    let s = |v: &str| Value::String(v.to_owned());
    d.insert("CFBundleIdentifier".into(), s(id));
    d.insert("CFBundleExecutable".into(), s(name));
    d.insert("CFBundleName".into(), s(name));
    d.insert("CFBundleDisplayName".into(), s(name));
    d.insert("CFBundlePackageType".into(), s("APPL"));
    d.insert("CFBundleInfoDictionaryVersion".into(), s("6.0"));
    let version = format!("{}.{}.{}", rng.below(20), rng.below(10), rng.below(100));
    d.insert("CFBundleShortVersionString".into(), s(&version));
    d.insert("CFBundleVersion".into(), s(&rng.below(90_000).to_string()));
    d.insert("LSMinimumSystemVersion".into(), s("11.0"));
    d.insert("LSApplicationCategoryType".into(), s(category));
    d.insert("NSHighResolutionCapable".into(), Value::Boolean(true));
    d.insert("NSHumanReadableCopyright".into(), s(&sentence(rng, 6)));
    for key in [
        "NSCameraUsageDescription",
        "NSMicrophoneUsageDescription",
        "NSAppleEventsUsageDescription",
    ] {
        d.insert(key.into(), s(&sentence(rng, 14)));
    }
    let mut url = Dictionary::new();
    url.insert("CFBundleURLName".into(), s(id));
    url.insert(
        "CFBundleURLSchemes".into(),
        Value::Array(vec![s(&name.to_lowercase())]),
    );
    d.insert(
        "CFBundleURLTypes".into(),
        Value::Array(vec![Value::Dictionary(url)]),
    );
    let docs = (0..rng.below(6))
        .map(|i| {
            let mut t = Dictionary::new();
            t.insert("CFBundleTypeName".into(), s(&format!("Document {i}")));
            t.insert("CFBundleTypeRole".into(), s("Editor"));
            t.insert(
                "LSItemContentTypes".into(),
                Value::Array(vec![s(&format!("{id}.doc{i}")), s("public.data")]),
            );
            Value::Dictionary(t)
        })
        .collect();
    d.insert("CFBundleDocumentTypes".into(), Value::Array(docs));
    let mut buf = Vec::new();
    if binary {
        Value::Dictionary(d).to_writer_binary(&mut buf).unwrap();
    } else {
        Value::Dictionary(d).to_writer_xml(&mut buf).unwrap();
    }
    buf
}

/// A macOS tree: [`APP_BUNDLES`] bundles, XML and binary Info.plists alternating; most in
/// `/Applications` (some in a vendor folder), some in bob's `~/Applications`; a couple of
/// dozen catalogued bundle ids and a few unknown social-networking apps.
pub fn macos(root: &Path, catalog: &Catalog) {
    let mut rng = Rng(0xd1b5_4a32_d192_ed03);
    std::fs::create_dir_all(root.join("Users/Shared")).unwrap();
    let known = catalogued(catalog, SignatureKind::BundleId, 25);
    for i in 0..APP_BUNDLES {
        let (id, name, category) = if i < known.len() {
            (
                known[i].clone(),
                format!("Known{i}"),
                "public.app-category.business",
            )
        } else if i % 50 == 13 {
            (
                format!("com.example.chat{i}"),
                format!("Chat{i}"),
                "public.app-category.social-networking",
            )
        } else {
            (
                format!("com.example.tool{i}"),
                format!("Tool{i}"),
                "public.app-category.productivity",
            )
        };
        let dir = match i % 7 {
            0 => "Users/bob/Applications",
            1 => "Applications/Vendor",
            _ => "Applications",
        };
        let bundle = format!("{dir}/{name}.app/Contents");
        std::fs::create_dir_all(root.join(&bundle).join("MacOS")).unwrap();
        write(
            root,
            &format!("{bundle}/Info.plist"),
            info_plist(&mut rng, &id, &name, category, i % 2 == 1),
        );
    }
}
