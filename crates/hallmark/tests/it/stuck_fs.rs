//! A FUSE filesystem served by the test process itself, holding executables
//! that never finish reading: each file is a copy of a real program, then
//! [`PAD`] bytes of zeros, then a tail whose reads are held unanswered
//! until [`StuckFs::release`]. Executing one maps only the program's own
//! pages, so the process runs normally; whoever reads the whole file (the
//! agent, hashing it) waits in the kernel, as it would on a FUSE or network
//! filesystem whose server stopped answering.
//!
//! Mounted with `fusermount3` (Debian `fuse3`); no libfuse is linked.

use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use fuser::{FileAttr, FileType, MountOption, ReplyAttr, ReplyData, ReplyEntry, Request};

/// Zeros between the program and the held tail: far more than the kernel's
/// readahead, so running the program never touches the tail.
const PAD: u64 = 4 << 20;
/// The held tail.
const TAIL: u64 = 64 << 10;
const ROOT: u64 = fuser::FUSE_ROOT_ID;
const TTL: Duration = Duration::from_secs(3600);

/// The mounted filesystem; unmounted when dropped (after releasing every
/// held read).
pub struct StuckFs {
    /// Where it is mounted; the files are `stuck-0`, `stuck-1`, ...
    pub dir: PathBuf,
    state: Arc<State>,
    session: Option<fuser::BackgroundSession>,
}

#[derive(Default)]
struct State {
    /// Held reads, with the file each is of.
    held: Mutex<Vec<(u64, ReplyData)>>,
    released: AtomicBool,
}

struct Fs {
    program: File,
    program_len: u64,
    files: u64,
    state: Arc<State>,
}

impl StuckFs {
    /// Mounts `files` copies of `program` on `dir` (an empty directory),
    /// open to every uid (`allow_other`) and executable.
    pub fn mount(program: &Path, files: u64, dir: &Path) -> std::io::Result<StuckFs> {
        let file = File::open(program)?;
        let program_len = file.metadata()?.len();
        let state = Arc::new(State::default());
        let fs = Fs { program: file, program_len, files, state: state.clone() };
        let options =
            [MountOption::FSName("hallmark-stuck".into()), MountOption::RO, MountOption::Exec, MountOption::AllowOther];
        let session = fuser::spawn_mount2(fs, dir, &options)?;
        Ok(StuckFs { dir: dir.to_owned(), state, session: Some(session) })
    }

    /// The path of file `i`.
    pub fn file(&self, i: u64) -> PathBuf {
        self.dir.join(format!("stuck-{i}"))
    }

    /// How many files have a read held unanswered now (the kernel may ask
    /// for more than one part of a file at once).
    pub fn held(&self) -> usize {
        let mut files: Vec<u64> = self.state.held.lock().unwrap().iter().map(|(ino, _)| *ino).collect();
        files.sort_unstable();
        files.dedup();
        files.len()
    }

    /// Answers every held read, and every later read of a tail, with EIO.
    pub fn release(&self) {
        self.state.released.store(true, Ordering::SeqCst);
        for (_, reply) in self.state.held.lock().unwrap().drain(..) {
            reply.error(rustix::io::Errno::IO.raw_os_error());
        }
    }
}

impl Drop for StuckFs {
    fn drop(&mut self) {
        self.release();
        drop(self.session.take());
    }
}

impl Fs {
    fn size(&self) -> u64 {
        self.program_len + PAD + TAIL
    }

    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let (kind, perm, size) = match ino {
            ROOT => (FileType::Directory, 0o755, 0),
            i if i > ROOT && i <= ROOT + self.files => (FileType::RegularFile, 0o755, self.size()),
            _ => return None,
        };
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        Some(FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: at,
            mtime: at,
            ctime: at,
            crtime: at,
            kind,
            perm,
            nlink: if kind == FileType::Directory { 2 } else { 1 },
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }
}

fn no_entry() -> i32 {
    rustix::io::Errno::NOENT.raw_os_error()
}

impl fuser::Filesystem for Fs {
    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        let ino = name
            .to_str()
            .and_then(|n| n.strip_prefix("stuck-"))
            .and_then(|i| i.parse::<u64>().ok())
            .filter(|i| parent == ROOT && *i < self.files)
            .map(|i| ROOT + 1 + i);
        match ino.and_then(|ino| self.attr(ino)) {
            Some(attr) => reply.entry(&TTL, &attr, 0),
            None => reply.error(no_entry()),
        }
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        match self.attr(ino) {
            Some(attr) => reply.attr(&TTL, &attr),
            None => reply.error(no_entry()),
        }
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyData,
    ) {
        if self.attr(ino).is_none_or(|a| a.kind != FileType::RegularFile) {
            return reply.error(no_entry());
        }
        let start = u64::try_from(offset).unwrap_or(0).min(self.size());
        let end = (start + u64::from(size)).min(self.size());
        if end > self.program_len + PAD {
            // The tail: held until released (the reader waits in the kernel).
            if self.state.released.load(Ordering::SeqCst) {
                return reply.error(rustix::io::Errno::IO.raw_os_error());
            }
            self.state.held.lock().unwrap().push((ino, reply));
            return;
        }
        let mut data = vec![0u8; usize::try_from(end - start).unwrap()];
        if start < self.program_len {
            let from_program = usize::try_from(self.program_len.min(end) - start).unwrap();
            if let Err(e) = self.program.read_exact_at(&mut data[..from_program], start) {
                return reply.error(e.raw_os_error().unwrap_or(rustix::io::Errno::IO.raw_os_error()));
            }
        }
        reply.data(&data);
    }
}
