//! Human sizes in configuration files: `70000`, `512KiB`, `4MiB`, `3MB`, `1GiB`.

/// Parses sizes: plain bytes, or with `KB`, `MB`, `KiB`, `MiB` (case-insensitive).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a size like '4MiB' or '512KiB'"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "kib" => 1024,
        "mb" => 1_000_000,
        "mib" => 1024 * 1024,
        "gb" => 1_000_000_000,
        "gib" => 1024 * 1024 * 1024,
        _ => return Err(format!("'{s}': unknown unit (use KiB, MiB, KB or MB)")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("'{s}' is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_and_decimal_units() {
        assert_eq!(parse_size("4MiB"), Ok(4 * 1024 * 1024));
        assert_eq!(parse_size("512 KiB"), Ok(512 * 1024));
        assert_eq!(parse_size("3MB"), Ok(3_000_000));
        assert_eq!(parse_size("70000"), Ok(70_000));
        assert!(parse_size("lots").is_err());
    }
}
