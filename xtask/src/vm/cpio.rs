//! A minimal writer for the "newc" cpio format, the one the kernel unpacks
//! into its initramfs (Documentation/driver-api/early-userspace/buffer-format.rst).
//! Entries get inode numbers in order, uid/gid 0 and mtime 0, so the same
//! inputs always give the same bytes.

use std::io::{self, Write};

const MAGIC: &str = "070701";
const TRAILER: &str = "TRAILER!!!";
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFLNK: u32 = 0o120000;
pub const S_IFCHR: u32 = 0o020000;

pub struct CpioWriter<W: Write> {
    out: W,
    next_inode: u32,
    written: u64,
}

impl<W: Write> CpioWriter<W> {
    pub fn new(out: W) -> Self {
        CpioWriter {
            out,
            next_inode: 1,
            written: 0,
        }
    }

    /// A directory; `path` is relative to the image root (`etc/xtask`).
    pub fn directory(&mut self, path: &str, permissions: u32) -> io::Result<()> {
        self.entry(path, S_IFDIR | (permissions & 0o7777), 2, &[])
    }

    pub fn file(&mut self, path: &str, permissions: u32, contents: &[u8]) -> io::Result<()> {
        self.entry(path, S_IFREG | (permissions & 0o7777), 1, contents)
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> io::Result<()> {
        self.entry(path, S_IFLNK | 0o777, 1, target.as_bytes())
    }

    /// A character device node, such as /dev/console (5, 1) for the kernel to open for /init.
    pub fn char_device(
        &mut self,
        path: &str,
        permissions: u32,
        major: u32,
        minor: u32,
    ) -> io::Result<()> {
        self.header(path, S_IFCHR | (permissions & 0o7777), 1, 0, (major, minor))
    }

    /// Writes the trailer and returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        self.next_inode = 0;
        self.entry(TRAILER, 0, 1, &[])?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn entry(&mut self, path: &str, mode: u32, links: u32, data: &[u8]) -> io::Result<()> {
        let size = u32::try_from(data.len()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{path} is larger than newc's 4 GiB limit"),
            )
        })?;
        self.header(path, mode, links, size, (0, 0))?;
        self.write(data)?;
        self.pad()
    }

    fn header(
        &mut self,
        path: &str,
        mode: u32,
        links: u32,
        size: u32,
        rdev: (u32, u32),
    ) -> io::Result<()> {
        let name = path.trim_start_matches('/');
        if name.is_empty() || name.as_bytes().contains(&0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cpio entry name {path:?} is empty or holds a NUL byte"),
            ));
        }
        let name_size = name.len() + 1;
        let inode = self.next_inode;
        if inode != 0 {
            self.next_inode += 1;
        }
        let header = format!(
            "{MAGIC}{inode:08x}{mode:08x}{uid:08x}{gid:08x}{links:08x}{mtime:08x}{size:08x}{dev_major:08x}{dev_minor:08x}{rdev_major:08x}{rdev_minor:08x}{name_size:08x}{check:08x}",
            uid = 0,
            gid = 0,
            mtime = 0,
            dev_major = 0,
            dev_minor = 0,
            rdev_major = rdev.0,
            rdev_minor = rdev.1,
            check = 0,
        );
        self.write(header.as_bytes())?;
        self.write(name.as_bytes())?;
        self.write(&[0])?;
        self.pad()
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// newc aligns every header and every file's data to 4 bytes.
    fn pad(&mut self) -> io::Result<()> {
        let padding = (4 - (self.written % 4) as usize) % 4;
        self.write(&[0u8; 3][..padding])
    }
}

/// One entry read back from a newc archive (for tests and `vm-test --inspect`-style checks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub mode: u32,
    pub data: Vec<u8>,
}

/// Reads a newc archive; stops at the trailer.
pub fn read(archive: &[u8]) -> io::Result<Vec<Entry>> {
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    let mut entries = Vec::new();
    let mut at = 0usize;
    let field = |header: &[u8], index: usize| -> io::Result<usize> {
        let text = std::str::from_utf8(&header[6 + index * 8..6 + (index + 1) * 8])
            .map_err(|_| invalid("header field is not ASCII"))?;
        usize::from_str_radix(text, 16).map_err(|_| invalid("header field is not hex"))
    };
    loop {
        let header = archive
            .get(at..at + 110)
            .ok_or_else(|| invalid("truncated header"))?;
        if &header[..6] != MAGIC.as_bytes() {
            return Err(invalid("bad magic"));
        }
        let mode = field(header, 1)? as u32;
        let size = field(header, 6)?;
        let name_size = field(header, 11)?;
        let name_start = at + 110;
        let name_bytes = archive
            .get(name_start..name_start + name_size - 1)
            .ok_or_else(|| invalid("truncated name"))?;
        let name = String::from_utf8(name_bytes.to_vec()).map_err(|_| invalid("name not UTF-8"))?;
        let data_start = (name_start + name_size).div_ceil(4) * 4;
        let data = archive
            .get(data_start..data_start + size)
            .ok_or_else(|| invalid("truncated data"))?
            .to_vec();
        at = (data_start + size).div_ceil(4) * 4;
        if name == TRAILER {
            return Ok(entries);
        }
        entries.push(Entry { name, mode, data });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_aligns() {
        let mut writer = CpioWriter::new(Vec::new());
        writer.directory("etc", 0o755).unwrap();
        writer.file("etc/plan.json", 0o644, b"{}\n").unwrap();
        writer.symlink("init", "/bin/xtask").unwrap();
        writer.file("/bin/odd", 0o755, b"12345").unwrap();
        writer.char_device("dev/console", 0o600, 5, 1).unwrap();
        let bytes = writer.finish().unwrap();
        assert_eq!(bytes.len() % 4, 0);
        let entries = read(&bytes).unwrap();
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            ["etc", "etc/plan.json", "init", "bin/odd", "dev/console"]
        );
        assert_eq!(entries[4].mode, S_IFCHR | 0o600);
        assert_eq!(entries[0].mode, S_IFDIR | 0o755);
        assert_eq!(entries[1].data, b"{}\n");
        assert_eq!(entries[2].mode, S_IFLNK | 0o777);
        assert_eq!(entries[2].data, b"/bin/xtask");
        assert_eq!(entries[3].data, b"12345");
        // The header is the 110-byte ASCII form the kernel expects.
        assert!(bytes.starts_with(b"070701"));
        assert_eq!(&bytes[110..114], b"etc\0");
    }

    #[test]
    fn same_inputs_same_bytes() {
        let build = || {
            let mut writer = CpioWriter::new(Vec::new());
            writer.file("a", 0o600, b"x").unwrap();
            writer.finish().unwrap()
        };
        assert_eq!(build(), build());
    }

    #[test]
    fn refuses_bad_names() {
        let mut writer = CpioWriter::new(Vec::new());
        assert!(writer.file("", 0o644, b"").is_err());
        assert!(writer.file("a\0b", 0o644, b"").is_err());
    }
}
