//! Sizes, parsed once into bytes.
//!
//! Partition sizes follow disko, which hands them to sgdisk: a number with an
//! optional K, M, G, T or P (powers of 1024), or `100%` for the rest of the
//! disk. A bare number is a count of 512-byte sectors, as in sgdisk.
//!
//! Disk sizes are what providers sell, usually in decimal units: 480 GB is
//! 480·10⁹ bytes. They accept `GB`/`TB` (powers of 1000), `GiB`/`TiB` and
//! disko's single letters (powers of 1024), or a plain byte count.

use std::fmt;

pub const SECTOR_BYTES: u64 = 512;
pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;

/// The size of a partition as disko understands it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionSize {
    Bytes(u64),
    /// `100%`: what is left of the disk; created last.
    Rest,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SizeError {
    Empty,
    /// Not of the form disko accepts; carries what was given.
    Malformed(String),
    /// Bigger than 2^64 bytes.
    TooLarge(String),
}

impl fmt::Display for SizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SizeError::Empty => f.write_str("the size is empty"),
            SizeError::Malformed(given) => write!(
                f,
                "{given:?} is not a size disko accepts (a whole number with an optional K, M, G, T or P, or \"100%\")"
            ),
            SizeError::TooLarge(given) => write!(f, "{given:?} is larger than 2^64 bytes"),
        }
    }
}

impl std::error::Error for SizeError {}

fn binary_multiplier(unit: &str) -> Option<u64> {
    Some(match unit {
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        "P" => 1 << 50,
        _ => return None,
    })
}

/// Splits `1024M` into `(1024, "M")`, refusing anything but ASCII digits before the unit.
fn split_number(given: &str) -> Result<(u64, &str), SizeError> {
    let digits_end = given
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(given.len());
    let (digits, unit) = given.split_at(digits_end);
    if digits.is_empty() {
        return Err(SizeError::Malformed(given.to_owned()));
    }
    let number = digits
        .parse::<u64>()
        .map_err(|_| SizeError::TooLarge(given.to_owned()))?;
    Ok((number, unit))
}

/// Parses a disko partition size (`1M`, `32G`, `100%`, `2048`).
pub fn parse_partition_size(given: &str) -> Result<PartitionSize, SizeError> {
    if given.is_empty() {
        return Err(SizeError::Empty);
    }
    if given == "100%" {
        return Ok(PartitionSize::Rest);
    }
    let (number, unit) = split_number(given)?;
    let multiplier = if unit.is_empty() {
        SECTOR_BYTES
    } else {
        binary_multiplier(unit).ok_or_else(|| SizeError::Malformed(given.to_owned()))?
    };
    number
        .checked_mul(multiplier)
        .map(PartitionSize::Bytes)
        .ok_or_else(|| SizeError::TooLarge(given.to_owned()))
}

/// Parses a disk size as sold (`480GB`, `447GiB`, `480G`, `480000000000`).
pub fn parse_disk_size(given: &str) -> Result<u64, SizeError> {
    let trimmed = given.trim();
    if trimmed.is_empty() {
        return Err(SizeError::Empty);
    }
    let (number, unit) = split_number(trimmed)?;
    let multiplier: u64 = match unit {
        "" | "B" => 1,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        "PB" => 1_000_000_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "PiB" => 1 << 50,
        single => {
            binary_multiplier(single).ok_or_else(|| SizeError::Malformed(given.to_owned()))?
        }
    };
    let bytes = number
        .checked_mul(multiplier)
        .ok_or_else(|| SizeError::TooLarge(given.to_owned()))?;
    if bytes == 0 {
        return Err(SizeError::Malformed(given.to_owned()));
    }
    Ok(bytes)
}

/// `414.0 GiB`: binary units with one decimal, as sgdisk and btrfs print them.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `444.6 GB`: decimal units, as providers sell disks.
pub fn human_decimal(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_sizes_use_powers_of_1024_and_sectors() {
        assert_eq!(
            parse_partition_size("1M"),
            Ok(PartitionSize::Bytes(1 << 20))
        );
        assert_eq!(
            parse_partition_size("1G"),
            Ok(PartitionSize::Bytes(1 << 30))
        );
        assert_eq!(
            parse_partition_size("32G"),
            Ok(PartitionSize::Bytes(32 << 30))
        );
        assert_eq!(
            parse_partition_size("2048"),
            Ok(PartitionSize::Bytes(2048 * 512))
        );
        assert_eq!(parse_partition_size("100%"), Ok(PartitionSize::Rest));
        assert_eq!(parse_partition_size("0"), Ok(PartitionSize::Bytes(0)));
    }

    #[test]
    fn garbage_partition_sizes_are_errors_not_panics() {
        for given in [
            "1GB", "1.5G", "-1G", "G", "abc", "50%", " 1G", "1g", "1G ", "١G",
        ] {
            assert!(
                matches!(parse_partition_size(given), Err(SizeError::Malformed(_))),
                "{given:?} should be malformed"
            );
        }
        assert_eq!(parse_partition_size(""), Err(SizeError::Empty));
        assert!(matches!(
            parse_partition_size("99999999999999999999999G"),
            Err(SizeError::TooLarge(_))
        ));
        assert!(matches!(
            parse_partition_size("17179869184G"),
            Err(SizeError::TooLarge(_))
        ));
    }

    #[test]
    fn disk_sizes_as_sold_are_decimal() {
        assert_eq!(parse_disk_size("480GB"), Ok(480_000_000_000));
        assert_eq!(parse_disk_size("480GiB"), Ok(480 << 30));
        assert_eq!(parse_disk_size("480G"), Ok(480 << 30));
        assert_eq!(parse_disk_size("1TB"), Ok(1_000_000_000_000));
        assert_eq!(parse_disk_size("123456"), Ok(123_456));
        assert!(parse_disk_size("0").is_err());
        assert!(parse_disk_size("480 GB").is_err());
        assert!(parse_disk_size("-1GB").is_err());
        assert!(parse_disk_size("").is_err());
    }

    #[test]
    fn human_units() {
        assert_eq!(human(444_563_718_144), "414.0 GiB");
        assert_eq!(human(1 << 20), "1.0 MiB");
        assert_eq!(human(512), "512 B");
        assert_eq!(human_decimal(480_000_000_000), "480.0 GB");
    }
}
