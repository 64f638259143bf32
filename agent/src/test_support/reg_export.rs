//! A reader of `.reg` exports (what `reg export KEY FILE` and regedit write), for tests: it
//! turns a registry filled on a live system into a hive file ([`to_hive_key`] then
//! [`HiveKey::to_hive`](super::hive_writer::HiveKey::to_hive)), so the same entries can be
//! scanned live and offline.
//!
//! # Format read
//! - Encoding: UTF-16LE with a BOM (`FF FE`, what Windows and Wine write for version 5.00), or
//!   UTF-8 with or without a BOM. Line ends `\r\n` or `\n`.
//! - First line: `Windows Registry Editor Version 5.00` (or `REGEDIT4`).
//! - `[HKEY_...\path]` starts a key; blank lines and `;` comments are ignored.
//! - `"name"=...` or `@=...` (the default value) sets a value of the last key. Names and string
//!   data are quoted, with the escapes `\\` and `\"` (and `\n`, `\r`, `\0`, which Wine writes).
//! - Data kept: `"string"` (REG_SZ) and `dword:XXXXXXXX` (REG_DWORD). Skipped and counted:
//!   `hex:...` and `hex(N):...` (every other type, including REG_EXPAND_SZ and REG_MULTI_SZ),
//!   whose lines continue while they end with `\`, and `=-` deletions.
//!
//! Anything else is an error naming its line number (1-based): a test that exports the wrong
//! thing fails rather than silently losing entries.

use super::hive_writer::{Data, HiveKey};

/// A value's data as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegValue {
    /// `"string"`: REG_SZ.
    Sz(String),
    /// `dword:XXXXXXXX`: REG_DWORD.
    Dword(u32),
}

/// One `[key]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegKey {
    /// The full path as written, e.g. `HKEY_LOCAL_MACHINE\Software\X`.
    pub path: String,
    /// Values in file order; the default value is named `""`.
    pub values: Vec<(String, RegValue)>,
}

/// A parsed export.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegExport {
    /// Keys in file order.
    pub keys: Vec<RegKey>,
    /// Values of other types, and deletions, that were skipped.
    pub skipped: usize,
}

/// Why an export cannot be read or converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegError {
    /// Not UTF-16LE with a BOM, nor UTF-8.
    #[error("encoding: {0}")]
    Encoding(String),
    /// A line that is not what the format allows.
    #[error("line {line}: {why}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        why: String,
    },
    /// A key outside the hive being written.
    #[error("key {key} is not below {root}")]
    OutsideRoot {
        /// The key's path.
        key: String,
        /// The hive's root path.
        root: String,
    },
}

fn at(line: usize, why: impl Into<String>) -> RegError {
    RegError::Line {
        line,
        why: why.into(),
    }
}

/// The text of an export: UTF-16LE after a BOM, else UTF-8 (a BOM dropped).
pub fn decode(bytes: &[u8]) -> Result<String, RegError> {
    if let Some(rest) = bytes.strip_prefix(&[0xFF, 0xFE]) {
        if rest.len() % 2 != 0 {
            return Err(RegError::Encoding(
                "UTF-16LE with an odd number of bytes".into(),
            ));
        }
        let units: Vec<u16> = rest
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        String::from_utf16(&units).map_err(|e| RegError::Encoding(format!("UTF-16LE: {e}")))
    } else {
        let rest = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        std::str::from_utf8(rest)
            .map(str::to_owned)
            .map_err(|e| RegError::Encoding(format!("neither UTF-16LE with a BOM nor UTF-8: {e}")))
    }
}

/// A quoted string at the start of `s` (which starts with `"`): its unescaped text and what
/// follows the closing quote.
fn quoted(s: &str) -> Result<(String, &str), String> {
    let mut out = String::new();
    let mut chars = s.char_indices().skip(1);
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, &s[i + 1..])),
            '\\' => match chars.next().map(|(_, e)| e) {
                Some('\\') => out.push('\\'),
                Some('"') => out.push('"'),
                Some('n') => out.push('\n'),
                Some('r') => out.push('\r'),
                Some('0') => out.push('\0'),
                Some(e) => return Err(format!("unknown escape \\{e}")),
                None => break,
            },
            c => out.push(c),
        }
    }
    Err("unterminated string".into())
}

/// Whether `data` starts a `hex:` or `hex(N):` value.
fn is_hex(data: &str) -> bool {
    if data.starts_with("hex:") {
        return true;
    }
    data.strip_prefix("hex(")
        .and_then(|r| r.split_once("):"))
        .is_some_and(|(n, _)| !n.is_empty() && n.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Parses an export's bytes (see the module docs).
pub fn parse(bytes: &[u8]) -> Result<RegExport, RegError> {
    let text = decode(bytes)?;
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
    let mut export = RegExport::default();
    let header = lines.by_ref().find(|(_, l)| !l.trim().is_empty());
    match header {
        Some((_, l))
            if l.trim() == "Windows Registry Editor Version 5.00" || l.trim() == "REGEDIT4" => {}
        Some((n, l)) => return Err(at(n, format!("not a .reg header: {l:?}"))),
        None => return Err(at(1, "empty file")),
    }
    while let Some((n, line)) = lines.next() {
        let t = line.trim();
        if t.is_empty() || t.starts_with(';') {
            continue;
        }
        if let Some(rest) = t.strip_prefix('[') {
            let path = rest
                .strip_suffix(']')
                .ok_or_else(|| at(n, "key without a closing ]"))?;
            if path.is_empty() || path.starts_with('-') {
                return Err(at(n, format!("not a key to export: [{path}]")));
            }
            export.keys.push(RegKey {
                path: path.to_owned(),
                values: Vec::new(),
            });
            continue;
        }
        let key = export
            .keys
            .last_mut()
            .ok_or_else(|| at(n, "a value before any [key]"))?;
        let (name, rest) = if let Some(r) = t.strip_prefix('@') {
            (String::new(), r)
        } else if t.starts_with('"') {
            quoted(t).map_err(|why| at(n, format!("value name: {why}")))?
        } else {
            return Err(at(n, format!("expected [key], \"name\"= or @=: {t:?}")));
        };
        let data = rest
            .trim_start()
            .strip_prefix('=')
            .ok_or_else(|| at(n, "no = after the value name"))?
            .trim_start();
        if data.starts_with('"') {
            let (s, after) = quoted(data).map_err(|why| at(n, format!("string: {why}")))?;
            if !after.trim().is_empty() {
                return Err(at(n, format!("text after the string: {after:?}")));
            }
            key.values.push((name, RegValue::Sz(s)));
        } else if let Some(hex) = data.strip_prefix("dword:") {
            let ok = (1..=8).contains(&hex.len()) && hex.chars().all(|c| c.is_ascii_hexdigit());
            let d = u32::from_str_radix(hex, 16)
                .ok()
                .filter(|_| ok)
                .ok_or_else(|| at(n, format!("bad dword: {hex:?}")))?;
            key.values.push((name, RegValue::Dword(d)));
        } else if is_hex(data) {
            let mut cur = data;
            while cur.ends_with('\\') {
                cur = match lines.next() {
                    Some((_, next)) => next.trim(),
                    None => return Err(at(n, "continued hex data runs past the end")),
                };
            }
            export.skipped += 1;
        } else if data == "-" {
            export.skipped += 1;
        } else {
            return Err(at(n, format!("unsupported value data: {data:?}")));
        }
    }
    Ok(export)
}

/// The components of a key path, the predefined key in its long form (`HKLM` →
/// `HKEY_LOCAL_MACHINE`).
fn components(path: &str) -> Vec<&str> {
    let mut parts: Vec<&str> = path.split('\\').filter(|p| !p.is_empty()).collect();
    if let Some(head) = parts.first_mut() {
        *head = match head.to_ascii_uppercase().as_str() {
            "HKLM" => "HKEY_LOCAL_MACHINE",
            "HKCU" => "HKEY_CURRENT_USER",
            "HKU" => "HKEY_USERS",
            "HKCR" => "HKEY_CLASSES_ROOT",
            _ => head,
        };
    }
    parts
}

/// The hive whose root is the key at `root` (e.g. `HKEY_LOCAL_MACHINE\SOFTWARE` for the
/// `SOFTWARE` hive, `HKEY_CURRENT_USER` for `NTUSER.DAT`), with every key of `exports` at its
/// path relative to that root (compared case-insensitively, like Windows):
/// `HKLM\Software\X` becomes `X` in `SOFTWARE`, `HKCU\Software\X` becomes `Software\X` in
/// `NTUSER.DAT`. A key outside `root` is an error. A value set twice keeps the last data.
pub fn to_hive_key(exports: &[RegExport], root: &str) -> Result<HiveKey, RegError> {
    let want = components(root);
    let mut hive = HiveKey::new("ROOT");
    for key in exports.iter().flat_map(|e| &e.keys) {
        let parts = components(&key.path);
        let below = parts.len() >= want.len()
            && parts
                .iter()
                .zip(&want)
                .all(|(a, b)| a.to_uppercase() == b.to_uppercase());
        if !below {
            return Err(RegError::OutsideRoot {
                key: key.path.clone(),
                root: root.to_owned(),
            });
        }
        let k = hive.key(&parts[want.len()..].join("\\"));
        for (name, value) in &key.values {
            let data = match value {
                RegValue::Sz(s) => Data::Sz(s.clone()),
                RegValue::Dword(d) => Data::Dword(*d),
            };
            match k
                .values
                .iter_mut()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
            {
                Some(slot) => slot.1 = data,
                None => k.values.push((name.clone(), data)),
            }
        }
    }
    Ok(hive)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utf16(text: &str) -> Vec<u8> {
        [0xFF, 0xFE]
            .into_iter()
            .chain(text.encode_utf16().flat_map(u16::to_le_bytes))
            .collect()
    }

    const EXPORT: &str = "Windows Registry Editor Version 5.00\r\n\r\n\
        [HKEY_LOCAL_MACHINE\\Software\\Microsoft\\Windows\\CurrentVersion\\Uninstall]\r\n\r\n\
        [HKEY_LOCAL_MACHINE\\Software\\Microsoft\\Windows\\CurrentVersion\\Uninstall\\App]\r\n\
        \"DisplayName\"=\"C:\\\\Apps\\\\\\\"Quoted\\\" \\\\ App\"\r\n\
        \"Display\\\"Odd\\\\Name\"=\"x\"\r\n\
        @=\"default\"\r\n\
        \"SystemComponent\"=dword:00000001\r\n\
        \"Icon\"=hex(2):43,00,3a,00,5c,00,61,00,2e,00,65,00,78,00,65,00,00,00\r\n\
        \"Multi\"=hex(7):61,00,00,00,62,00,00,00,00,00,00,00,00,00,00,00,00,00,00,00,\\\r\n  \
        00,00,00,00\r\n\
        \"Bytes\"=hex:01,02\r\n\
        \"Gone\"=-\r\n\
        \"Version\"=\"5.2.3\"\r\n\r\n";

    #[test]
    fn utf16_export_with_escapes_and_continued_hex_values() {
        let e = parse(&utf16(EXPORT)).unwrap();
        assert_eq!(e.keys.len(), 2);
        assert!(e.keys[0].values.is_empty());
        assert_eq!(
            e.keys[1].path,
            r"HKEY_LOCAL_MACHINE\Software\Microsoft\Windows\CurrentVersion\Uninstall\App"
        );
        assert_eq!(
            e.keys[1].values,
            vec![
                (
                    "DisplayName".into(),
                    RegValue::Sz(r#"C:\Apps\"Quoted" \ App"#.into())
                ),
                (r#"Display"Odd\Name"#.into(), RegValue::Sz("x".into())),
                (String::new(), RegValue::Sz("default".into())),
                ("SystemComponent".into(), RegValue::Dword(1)),
                ("Version".into(), RegValue::Sz("5.2.3".into())),
            ]
        );
        assert_eq!(e.skipped, 4, "hex(2), hex(7) over two lines, hex, deletion");
        // The same text as UTF-8, with and without a BOM, reads the same.
        assert_eq!(parse(EXPORT.as_bytes()).unwrap(), e);
        let bom: Vec<u8> = b"\xEF\xBB\xBF"
            .iter()
            .chain(EXPORT.as_bytes())
            .copied()
            .collect();
        assert_eq!(parse(&bom).unwrap(), e);
    }

    #[test]
    fn wine_escapes_and_dword_edges() {
        let e = parse(
            "REGEDIT4\n[HKEY_CURRENT_USER\\X]\n\"a\"=\"l1\\nl2\\r\\0\"\n\"b\"=dword:ffffffff\n\"c\" = dword:0\n"
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(
            e.keys[0].values,
            vec![
                ("a".into(), RegValue::Sz("l1\nl2\r\0".into())),
                ("b".into(), RegValue::Dword(u32::MAX)),
                ("c".into(), RegValue::Dword(0)),
            ]
        );
    }

    #[test]
    fn malformed_lines_are_named_by_number() {
        let case = |body: &str| {
            let text = format!(
                "Windows Registry Editor Version 5.00\r\n\r\n[HKEY_CURRENT_USER\\X]\r\n{body}"
            );
            parse(&utf16(&text)).unwrap_err().to_string()
        };
        assert_eq!(
            case("\"a\"=\"ok\"\r\n\"b\"=\"open\r\n"),
            "line 5: string: unterminated string"
        );
        assert_eq!(
            case("\"a\"=\"bad \\q\"\r\n"),
            "line 4: string: unknown escape \\q"
        );
        assert_eq!(
            case("\"a\"=dword:123456789\r\n"),
            "line 4: bad dword: \"123456789\""
        );
        assert_eq!(case("\"a\"=dword:xyz\r\n"), "line 4: bad dword: \"xyz\"");
        assert_eq!(case("\"a\" \"b\"\r\n"), "line 4: no = after the value name");
        assert_eq!(
            case("\"a\"=\"x\" y\r\n"),
            "line 4: text after the string: \" y\""
        );
        assert_eq!(
            case("\"a\"=qword:1\r\n"),
            "line 4: unsupported value data: \"qword:1\""
        );
        assert_eq!(
            case("junk\r\n"),
            "line 4: expected [key], \"name\"= or @=: \"junk\""
        );
        assert_eq!(
            case("[HKEY_CURRENT_USER\\Y\r\n"),
            "line 4: key without a closing ]"
        );
        assert_eq!(
            case("[-HKEY_CURRENT_USER\\Y]\r\n"),
            "line 4: not a key to export: [-HKEY_CURRENT_USER\\Y]"
        );
        assert_eq!(
            case("\"a\"=hex:01,\\\r\n  02,\\\r\n"),
            "line 4: continued hex data runs past the end"
        );
        assert_eq!(
            parse(b"\"a\"=\"x\"\n").unwrap_err().to_string(),
            "line 1: not a .reg header: \"\\\"a\\\"=\\\"x\\\"\""
        );
        assert_eq!(
            parse(b"REGEDIT4\n\n\"a\"=\"x\"\n").unwrap_err().to_string(),
            "line 3: a value before any [key]"
        );
        assert!(matches!(
            parse(&[0xFF, 0xFE, 0x41]),
            Err(RegError::Encoding(_))
        ));
        assert!(matches!(parse(b"\xC3\x28"), Err(RegError::Encoding(_))));
    }

    #[test]
    fn keys_land_at_their_path_relative_to_the_hive_root() {
        let machine = parse(
            b"REGEDIT4\n[HKEY_LOCAL_MACHINE\\Software\\Microsoft\\Uninstall\\A]\n\"DisplayName\"=\"A\"\n\
              [HKEY_LOCAL_MACHINE\\SOFTWARE\\WOW6432Node\\Microsoft\\Uninstall\\B]\n\"DisplayName\"=\"B\"\n",
        )
        .unwrap();
        let hive = to_hive_key(std::slice::from_ref(&machine), r"HKLM\SOFTWARE").unwrap();
        assert_eq!(
            hive.subkeys
                .iter()
                .map(|k| k.name.as_str())
                .collect::<Vec<_>>(),
            ["Microsoft", "WOW6432Node"],
            "HKLM\\Software\\X is X in SOFTWARE"
        );
        let a = &hive.subkeys[0].subkeys[0].subkeys[0];
        assert_eq!(a.name, "A");
        assert!(matches!(&a.values[0], (n, Data::Sz(v)) if n == "DisplayName" && v == "A"));
        // And the crate's own hive reader finds it there.
        let file = crate::sources::util::hive::Hive::parse(hive.to_hive()).unwrap();
        let b = file
            .open(r"wow6432node\Microsoft\Uninstall\B")
            .unwrap()
            .expect("B in the hive");
        let v = b.values().unwrap().next().unwrap().unwrap();
        assert_eq!(v.string().unwrap().as_deref(), Some("B"));

        let user = parse(
            b"REGEDIT4\n[HKEY_CURRENT_USER]\n\"x\"=dword:1\n[HKEY_CURRENT_USER\\Software\\U]\n\"DisplayName\"=\"U\"\n\"DisplayName\"=\"U2\"\n",
        )
        .unwrap();
        let hive = to_hive_key(&[user], "HKEY_CURRENT_USER").unwrap();
        assert!(matches!(&hive.values[0], (n, Data::Dword(1)) if n == "x"));
        let u = &hive.subkeys[0].subkeys[0];
        assert_eq!(
            (hive.subkeys[0].name.as_str(), u.name.as_str()),
            ("Software", "U")
        );
        assert_eq!(u.values.len(), 1, "set twice, kept once");
        assert!(matches!(&u.values[0], (_, Data::Sz(v)) if v == "U2"));

        let err = to_hive_key(&[machine], r"HKEY_LOCAL_MACHINE\SOFTWARE\Microsoft").unwrap_err();
        assert_eq!(
            err.to_string(),
            r"key HKEY_LOCAL_MACHINE\SOFTWARE\WOW6432Node\Microsoft\Uninstall\B is not below HKEY_LOCAL_MACHINE\SOFTWARE\Microsoft"
        );
        // A sibling whose name merely starts like the root is outside it.
        let sibling = parse(b"REGEDIT4\n[HKEY_LOCAL_MACHINE\\SOFTWARE2\\X]\n").unwrap();
        assert!(to_hive_key(&[sibling], r"HKLM\SOFTWARE").is_err());
    }
}
