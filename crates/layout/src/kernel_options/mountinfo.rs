//! What the kernel shows of a mount's options afterwards: the forms
//! /proc/self/mountinfo prints, and the modes vfat gives new files.

use super::reading::octal;
use super::{key, read, Filesystem};

/// The options as /proc/self/mountinfo prints them: `subvol=/@nix` with its
/// slash, vfat's `umask` as `fmask` and `dmask`, zstd without a level as
/// level 3. Userspace-only options never reach the kernel.
pub fn kernel_forms(fs_type: &str, options: &[String]) -> Vec<String> {
    let fs = Filesystem::of(fs_type);
    let mask = |v: &str| octal(v).map_or(v.to_owned(), |m| format!("{m:04o}"));
    let mut forms = Vec::new();
    for option in options {
        let name = key(option);
        let value = option.split_once('=').map(|(_, v)| v);
        if name == "defaults" || name == "nofail" || name.starts_with("x-") {
            continue;
        }
        match (fs, name, value) {
            (Filesystem::Btrfs, "subvol", Some(v)) if !v.starts_with('/') => {
                forms.push(format!("subvol=/{v}"))
            }
            (Filesystem::Btrfs, "compress" | "compress-force", Some("zstd")) => {
                forms.push(format!("{name}=zstd:3"))
            }
            (Filesystem::Btrfs, "compress" | "compress-force", None | Some("zlib")) => {
                forms.push(format!("{name}=zlib:3"))
            }
            (Filesystem::Vfat, "umask", Some(v)) => {
                forms.push(format!("fmask={}", mask(v)));
                forms.push(format!("dmask={}", mask(v)));
            }
            (Filesystem::Vfat, "fmask" | "dmask", Some(v)) => {
                forms.push(format!("{name}={}", mask(v)))
            }
            _ => forms.push(option.clone()),
        }
    }
    forms.dedup();
    forms
}

/// The modes vfat gives new directories and files: 0777 less dmask and
/// fmask as the options leave them in order (umask sets both; without
/// either, the mounting process's umask, 022). vfat has no execute bit, so
/// files keep x unless `showexec`.
pub fn vfat_modes(options: &[String]) -> (u32, u32) {
    let reading = read(Filesystem::Vfat, options);
    let directory = 0o777 & !reading.dmask.unwrap_or(0o022);
    let mut file = 0o777 & !reading.fmask.unwrap_or(0o022);
    if reading.showexec {
        file &= !0o111;
    }
    (directory, file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(options: &[&str]) -> Vec<String> {
        options.iter().map(|o| (*o).to_owned()).collect()
    }

    #[test]
    fn kernel_forms_as_mountinfo_prints_them() {
        let given = owned(&[
            "subvol=@nix",
            "compress=zstd",
            "noatime",
            "x-systemd.automount",
            "defaults",
        ]);
        assert_eq!(
            kernel_forms("btrfs", &given),
            ["subvol=/@nix", "compress=zstd:3", "noatime"]
        );
        assert_eq!(
            kernel_forms(
                "btrfs",
                &owned(&["compress-force", "subvol=/@nix", "nofail"])
            ),
            ["compress-force=zlib:3", "subvol=/@nix"]
        );
        assert_eq!(
            kernel_forms("vfat", &owned(&["umask=077"])),
            ["fmask=0077", "dmask=0077"]
        );
        // Only Btrfs spells subvol= with a slash.
        assert_eq!(
            kernel_forms("ext4", &owned(&["subvol=x", "umask=077"])),
            ["subvol=x", "umask=077"]
        );
    }

    #[test]
    fn vfat_modes_in_order() {
        assert_eq!(vfat_modes(&owned(&["umask=0077"])), (0o700, 0o700));
        assert_eq!(
            vfat_modes(&owned(&["fmask=0177", "dmask=0077"])),
            (0o700, 0o600)
        );
        assert_eq!(vfat_modes(&[]), (0o755, 0o755));
        // A later umask= sets the file mask again (fat_parse_param reads in order).
        assert_eq!(
            vfat_modes(&owned(&["fmask=0022", "umask=0077"])),
            (0o700, 0o700)
        );
        assert_eq!(
            vfat_modes(&owned(&["umask=0077", "fmask=0022"])),
            (0o700, 0o755)
        );
        assert_eq!(
            vfat_modes(&owned(&["umask=0022", "showexec"])),
            (0o755, 0o644)
        );
    }
}
