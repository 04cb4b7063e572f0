//! A SQLite VFS shim that hands a transaction's WAL frames to the kernel in one `pwrite` instead
//! of two per page.
//!
//! SQLite writes each WAL frame as two `write` calls — the 24-byte frame header, then the page —
//! and a frame is 4,120 bytes, so with 4 KiB pages every page write also straddles two pages of
//! the kernel's page cache. A converted HL7 message writes ~30 frames: ~60 system calls on the one
//! writer thread, which is the gateway's bottleneck. This shim collects the frames of a
//! transaction in memory while they are written one after the other, and writes them out in one
//! call when the transaction's commit frame is complete.
//!
//! # Why it is safe
//!
//! What other connections can see, and what a crash leaves, is unchanged:
//! - **Readers** learn of new frames only from the wal-index header, which SQLite publishes after
//!   writing the frames, behind a memory barrier (`xShmBarrier` on the database file). The commit
//!   frame's page write, which precedes that, writes out the transaction's frames; the barrier
//!   writes out anything still held as a second line (in practice only frames that a transaction
//!   spilled before it was rolled back, see the tests). So no reader ever sees a frame that is not
//!   in the file.
//! - **Errors** are SQLite's to handle: the flush happens inside the `xWrite` of the commit frame,
//!   so a failing disk fails the commit exactly as an unbuffered write would. Should the barrier
//!   ever find frames it cannot write, the process aborts rather than let SQLite publish them:
//!   nothing of that transaction was acknowledged, and recovery at the next open ignores frames
//!   that were never completely written.
//! - **Every other operation** on the WAL file (read, sync, truncate, size, lock, file control,
//!   close) flushes first, so SQLite and the checkpointer always read what was written, and
//!   `synchronous=FULL` syncs it.
//! - **A crash** loses at most frames of a transaction that had not committed, as before.
//!
//! Only writes that continue the buffer are collected; a write elsewhere in the file (SQLite
//! rewriting a frame of the current transaction) flushes the buffer and is then collected alone.
//!
//! The database file and every other file go straight to the underlying VFS (`unix`), so locks
//! and shared memory are shared with connections that do not use this shim.

#![deny(unsafe_op_in_unsafe_fn)]

use libsqlite3_sys as ffi;
use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};

/// What the shim did since the process started (over all connections using it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// WAL writes SQLite asked for.
    pub writes: u64,
    /// Writes handed to the underlying VFS for them.
    pub flushes: u64,
    /// Times a memory barrier on the database file found frames still held. A commit frame
    /// writes out its transaction's frames, so these are frames that a transaction spilled
    /// before it was rolled back (written then, never part of a commit).
    pub barrier_flushes: u64,
}

static WRITES: AtomicU64 = AtomicU64::new(0);
static FLUSHES: AtomicU64 = AtomicU64::new(0);
static BARRIER_FLUSHES: AtomicU64 = AtomicU64::new(0);

/// The counters so far.
pub fn stats() -> Stats {
    Stats {
        writes: WRITES.load(Relaxed),
        flushes: FLUSHES.load(Relaxed),
        barrier_flushes: BARRIER_FLUSHES.load(Relaxed),
    }
}

/// The name under which [`register`] registers the VFS.
pub const NAME: &str = "v2fhir-walbuf";
const NAME_C: &CStr = c"v2fhir-walbuf";

/// Frames are written out at the latest when this much is held (a transaction larger than this
/// is written in several calls).
const LIMIT: usize = 4 << 20;

/// The largest write the `unix` VFS performs in one call (it masks the length with `0x1ffff`);
/// held frames are written in pieces of at most this size.
const CHUNK: usize = 0x1_f000;

/// Size of a WAL frame header; bytes 4..8 of it are non-zero in a commit frame.
const FRAME_HEADER: usize = 24;

/// Register the VFS (once per process; later calls return the first result). Open a connection
/// with it by name ([`NAME`]). Returns SQLite's error code if registration failed.
pub fn register() -> Result<&'static str, c_int> {
    static DONE: OnceLock<Result<(), c_int>> = OnceLock::new();
    (*DONE.get_or_init(|| {
        // SAFETY: sqlite3_vfs_find(NULL) returns the default VFS (or NULL), which lives for the
        // process. The struct we register is leaked, so it lives for the process too.
        unsafe {
            let rc = ffi::sqlite3_initialize();
            if rc != ffi::SQLITE_OK {
                return Err(rc);
            }
            let real = ffi::sqlite3_vfs_find(std::ptr::null());
            if real.is_null() {
                return Err(ffi::SQLITE_ERROR);
            }
            let vfs = Box::new(ffi::sqlite3_vfs {
                iVersion: 2,
                szOsFile: (HEADER + (*real).szOsFile as usize) as c_int,
                mxPathname: (*real).mxPathname,
                pNext: std::ptr::null_mut(),
                zName: NAME_C.as_ptr(),
                pAppData: real.cast(),
                xOpen: Some(open),
                xDelete: Some(delete),
                xAccess: Some(access),
                xFullPathname: Some(full_pathname),
                xDlOpen: Some(dl_open),
                xDlError: Some(dl_error),
                xDlSym: Some(dl_sym),
                xDlClose: Some(dl_close),
                xRandomness: Some(randomness),
                xSleep: Some(sleep),
                xCurrentTime: Some(current_time),
                xGetLastError: Some(get_last_error),
                xCurrentTimeInt64: Some(current_time_int64),
                xSetSystemCall: None,
                xGetSystemCall: None,
                xNextSystemCall: None,
            });
            let rc = ffi::sqlite3_vfs_register(Box::leak(vfs), 0);
            if rc != ffi::SQLITE_OK {
                return Err(rc);
            }
        }
        Ok(())
    }))
    .map(|()| NAME)
}

/// What a database file shares with its WAL file: the frames not yet written.
#[derive(Default)]
struct Pending {
    /// The underlying WAL file while it is open.
    wal: Option<WalPtr>,
    /// Offset in the WAL file of `data[0]`.
    offset: i64,
    data: Vec<u8>,
    /// The page of the commit frame whose header was just written goes here: writing it
    /// completes the transaction's frames.
    commit_page_at: Option<i64>,
}

/// The underlying (real) WAL file. Used only by the connection that opened it, under the
/// [`Pending`] mutex.
struct WalPtr(*mut ffi::sqlite3_file);
// SAFETY: a SQLite connection (and its files) is used by one thread at a time; the pointer is
// only dereferenced under the mutex, and cleared before the file is closed.
unsafe impl Send for WalPtr {}

impl Pending {
    /// Write out what is held. SQLite's error code on failure (the data is dropped: SQLite
    /// treats the failed write as it would an unbuffered one).
    fn flush(&mut self) -> c_int {
        self.commit_page_at = None;
        if self.data.is_empty() {
            return ffi::SQLITE_OK;
        }
        let mut rc = ffi::SQLITE_IOERR_WRITE;
        if let Some(w) = &self.wal {
            let mut offset = self.offset;
            for piece in self.data.chunks(CHUNK) {
                FLUSHES.fetch_add(1, Relaxed);
                // SAFETY: `wal` is the open underlying file (cleared in `close` before it closes).
                rc = unsafe { write_real(w.0, piece, offset) };
                if rc != ffi::SQLITE_OK {
                    break;
                }
                offset += piece.len() as i64;
            }
        }
        self.data.clear();
        rc
    }

    /// Take a write of `buf` at `offset`.
    fn write(&mut self, buf: &[u8], offset: i64) -> c_int {
        WRITES.fetch_add(1, Relaxed);
        let end = self.offset + self.data.len() as i64;
        if !self.data.is_empty() && offset != end {
            let rc = self.flush();
            if rc != ffi::SQLITE_OK {
                return rc;
            }
        }
        let commit_page = self.commit_page_at == Some(offset);
        let commit_header = buf.len() == FRAME_HEADER && buf[4..8] != [0, 0, 0, 0];
        if commit_header && self.data.is_empty() {
            // A commit frame's header rewritten in place (SQLite recomputing checksums after
            // overwriting frames of the transaction): nothing may follow it, write it now.
            let Some(w) = &self.wal else {
                return ffi::SQLITE_IOERR_WRITE;
            };
            FLUSHES.fetch_add(1, Relaxed);
            // SAFETY: as in `flush`.
            let rc = unsafe { write_real(w.0, buf, offset) };
            self.commit_page_at = Some(offset + FRAME_HEADER as i64);
            return rc;
        }
        if self.data.is_empty() {
            self.offset = offset;
        }
        self.data.extend_from_slice(buf);
        self.commit_page_at = commit_header.then_some(offset + FRAME_HEADER as i64);
        if commit_page || self.data.len() >= LIMIT {
            return self.flush();
        }
        ffi::SQLITE_OK
    }
}

/// Our file object: SQLite's base struct, what we add, then the underlying VFS's file object.
#[repr(C)]
struct File {
    base: ffi::sqlite3_file,
    kind: Kind,
    /// For the database and WAL files: the frames they share (an `Arc::into_raw`).
    pending: *const Mutex<Pending>,
}

#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Other,
    Database,
    Wal,
}

/// Offset of the underlying file object in ours, kept 8-byte aligned.
const HEADER: usize = std::mem::size_of::<File>().next_multiple_of(8);

/// The underlying file object inside ours.
///
/// # Safety
/// `f` points to one of our file objects.
unsafe fn real(f: *mut ffi::sqlite3_file) -> *mut ffi::sqlite3_file {
    // SAFETY: szOsFile reserves HEADER bytes for `File` before the underlying object.
    unsafe { f.cast::<u8>().add(HEADER).cast() }
}

/// Our fields of `f`.
///
/// # Safety
/// `f` points to one of our open file objects.
unsafe fn ours<'a>(f: *mut ffi::sqlite3_file) -> &'a File {
    // SAFETY: `File` starts with the base struct (repr(C)).
    unsafe { &*f.cast::<File>() }
}

/// The [`Pending`] of `f`, if it has one.
///
/// # Safety
/// `f` points to one of our open file objects.
unsafe fn pending<'a>(f: *mut ffi::sqlite3_file) -> Option<&'a Mutex<Pending>> {
    // SAFETY: `pending` is null or an Arc::into_raw that lives until the file is closed.
    unsafe { ours(f).pending.as_ref() }
}

/// Lock `m`, ignoring poisoning (a panic cannot happen while it is held: see `Pending`).
fn lock(m: &Mutex<Pending>) -> std::sync::MutexGuard<'_, Pending> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Write through to the underlying file.
///
/// # Safety
/// `real` is an open underlying file.
unsafe fn write_real(real: *mut ffi::sqlite3_file, buf: &[u8], offset: i64) -> c_int {
    // SAFETY: per the function's contract.
    unsafe {
        match (*(*real).pMethods).xWrite {
            Some(w) => w(real, buf.as_ptr().cast(), buf.len() as c_int, offset),
            None => ffi::SQLITE_IOERR_WRITE,
        }
    }
}

/// Flush the frames held for `f` if it is a WAL file; SQLite's error code.
///
/// # Safety
/// `f` points to one of our open file objects.
unsafe fn flush_wal(f: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: per the function's contract.
    unsafe {
        match (ours(f).kind, pending(f)) {
            (Kind::Wal, Some(p)) => lock(p).flush(),
            _ => ffi::SQLITE_OK,
        }
    }
}

/// The underlying VFS.
///
/// # Safety
/// `vfs` is ours (registered by [`register`]).
unsafe fn under(vfs: *mut ffi::sqlite3_vfs) -> *mut ffi::sqlite3_vfs {
    // SAFETY: per the function's contract, pAppData is the underlying VFS.
    unsafe { (*vfs).pAppData.cast() }
}

static METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(close),
    xRead: Some(read),
    xWrite: Some(write),
    xTruncate: Some(truncate),
    xSync: Some(sync),
    xFileSize: Some(file_size),
    xLock: Some(lock_file),
    xUnlock: Some(unlock_file),
    xCheckReservedLock: Some(check_reserved_lock),
    xFileControl: Some(file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: Some(shm_map),
    xShmLock: Some(shm_lock),
    xShmBarrier: Some(shm_barrier),
    xShmUnmap: Some(shm_unmap),
    xFetch: Some(fetch),
    xUnfetch: Some(unfetch),
};

unsafe extern "C" fn open(
    vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    f: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    // SAFETY: SQLite gives us szOsFile bytes at `f`; the underlying VFS opens its object inside.
    unsafe {
        let under = under(vfs);
        let real = real(f);
        (*f).pMethods = std::ptr::null();
        let Some(xopen) = (*under).xOpen else {
            return ffi::SQLITE_CANTOPEN;
        };
        let rc = xopen(under, name, real, flags, out_flags);
        if rc != ffi::SQLITE_OK {
            // SQLite would close a file whose pMethods is set; ours is not, so close the
            // underlying one here if it was left open.
            if !(*real).pMethods.is_null()
                && let Some(close) = (*(*real).pMethods).xClose
            {
                close(real);
            }
            return rc;
        }
        let (kind, pending) = if flags & ffi::SQLITE_OPEN_MAIN_DB != 0 {
            (
                Kind::Database,
                Arc::into_raw(Arc::new(Mutex::new(Pending::default()))),
            )
        } else if flags & ffi::SQLITE_OPEN_WAL != 0 && !name.is_null() {
            // The WAL's database, opened through us by the same connection.
            let db = ffi::sqlite3_database_file_object(name);
            if !db.is_null()
                && std::ptr::eq((*db).pMethods, &METHODS)
                && ours(db).kind == Kind::Database
                && !ours(db).pending.is_null()
            {
                let p = ours(db).pending;
                Arc::increment_strong_count(p);
                let mut g = lock(&*p);
                g.wal = Some(WalPtr(real));
                g.data.clear();
                g.commit_page_at = None;
                drop(g);
                (Kind::Wal, p)
            } else {
                (Kind::Other, std::ptr::null())
            }
        } else {
            (Kind::Other, std::ptr::null())
        };
        std::ptr::write(
            f.cast::<File>(),
            File {
                base: ffi::sqlite3_file { pMethods: &METHODS },
                kind,
                pending,
            },
        );
        ffi::SQLITE_OK
    }
}

unsafe extern "C" fn close(f: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: `f` is one of our open files; after this it is closed and not used again.
    unsafe {
        let mut rc = ffi::SQLITE_OK;
        let p = ours(f).pending;
        if !p.is_null() {
            if ours(f).kind == Kind::Wal {
                let mut g = lock(&*p);
                rc = g.flush();
                g.wal = None;
            }
            drop(Arc::from_raw(p));
        }
        let real = real(f);
        let rc2 = match (*(*real).pMethods).xClose {
            Some(c) => c(real),
            None => ffi::SQLITE_OK,
        };
        (*f).pMethods = std::ptr::null();
        if rc != ffi::SQLITE_OK { rc } else { rc2 }
    }
}

/// Forward a method to the underlying file after flushing held WAL frames.
macro_rules! forward {
    ($f:expr, $method:ident, $missing:expr $(, $arg:expr)*) => {{
        let rc = flush_wal($f);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        let real = real($f);
        match (*(*real).pMethods).$method {
            Some(m) => m(real $(, $arg)*),
            None => $missing,
        }
    }};
}

unsafe extern "C" fn read(
    f: *mut ffi::sqlite3_file,
    buf: *mut c_void,
    amt: c_int,
    offset: ffi::sqlite3_int64,
) -> c_int {
    // SAFETY: SQLite calls this on our open file with a valid buffer.
    unsafe { forward!(f, xRead, ffi::SQLITE_IOERR_READ, buf, amt, offset) }
}

unsafe extern "C" fn write(
    f: *mut ffi::sqlite3_file,
    buf: *const c_void,
    amt: c_int,
    offset: ffi::sqlite3_int64,
) -> c_int {
    // SAFETY: SQLite calls this on our open file with `amt` readable bytes at `buf`.
    unsafe {
        if let (Kind::Wal, Some(p)) = (ours(f).kind, pending(f))
            && amt >= 0
            && !buf.is_null()
        {
            let data = std::slice::from_raw_parts(buf.cast::<u8>(), amt as usize);
            return lock(p).write(data, offset);
        }
        let real = real(f);
        match (*(*real).pMethods).xWrite {
            Some(w) => w(real, buf, amt, offset),
            None => ffi::SQLITE_IOERR_WRITE,
        }
    }
}

unsafe extern "C" fn truncate(f: *mut ffi::sqlite3_file, size: ffi::sqlite3_int64) -> c_int {
    // SAFETY: SQLite calls this on our open file.
    unsafe { forward!(f, xTruncate, ffi::SQLITE_IOERR_TRUNCATE, size) }
}

unsafe extern "C" fn sync(f: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    // SAFETY: SQLite calls this on our open file.
    unsafe { forward!(f, xSync, ffi::SQLITE_IOERR_FSYNC, flags) }
}

unsafe extern "C" fn file_size(f: *mut ffi::sqlite3_file, size: *mut ffi::sqlite3_int64) -> c_int {
    // SAFETY: SQLite calls this on our open file with a valid out pointer.
    unsafe { forward!(f, xFileSize, ffi::SQLITE_IOERR_FSTAT, size) }
}

unsafe extern "C" fn lock_file(f: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    // SAFETY: SQLite calls this on our open file.
    unsafe { forward!(f, xLock, ffi::SQLITE_IOERR_LOCK, level) }
}

unsafe extern "C" fn unlock_file(f: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    // SAFETY: SQLite calls this on our open file.
    unsafe { forward!(f, xUnlock, ffi::SQLITE_IOERR_UNLOCK, level) }
}

unsafe extern "C" fn check_reserved_lock(f: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    // SAFETY: SQLite calls this on our open file with a valid out pointer.
    unsafe {
        forward!(
            f,
            xCheckReservedLock,
            ffi::SQLITE_IOERR_CHECKRESERVEDLOCK,
            out
        )
    }
}

unsafe extern "C" fn file_control(f: *mut ffi::sqlite3_file, op: c_int, arg: *mut c_void) -> c_int {
    // SAFETY: SQLite calls this on our open file; `arg` is op-specific and passed on as is.
    unsafe { forward!(f, xFileControl, ffi::SQLITE_NOTFOUND, op, arg) }
}

unsafe extern "C" fn sector_size(f: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite calls this on our open file.
    unsafe {
        let real = real(f);
        match (*(*real).pMethods).xSectorSize {
            Some(m) => m(real),
            None => 4096,
        }
    }
}

unsafe extern "C" fn device_characteristics(f: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite calls this on our open file.
    unsafe {
        let real = real(f);
        match (*(*real).pMethods).xDeviceCharacteristics {
            Some(m) => m(real),
            None => 0,
        }
    }
}

unsafe extern "C" fn shm_map(
    f: *mut ffi::sqlite3_file,
    page: c_int,
    size: c_int,
    extend: c_int,
    out: *mut *mut c_void,
) -> c_int {
    // SAFETY: SQLite calls this on our open database file with a valid out pointer.
    unsafe {
        forward!(
            f,
            xShmMap,
            ffi::SQLITE_IOERR_SHMMAP,
            page,
            size,
            extend,
            out
        )
    }
}

unsafe extern "C" fn shm_lock(
    f: *mut ffi::sqlite3_file,
    offset: c_int,
    n: c_int,
    flags: c_int,
) -> c_int {
    // SAFETY: SQLite calls this on our open database file.
    unsafe { forward!(f, xShmLock, ffi::SQLITE_IOERR_SHMLOCK, offset, n, flags) }
}

unsafe extern "C" fn shm_barrier(f: *mut ffi::sqlite3_file) {
    // SAFETY: SQLite calls this on our open database file.
    unsafe {
        if let (Kind::Database, Some(p)) = (ours(f).kind, pending(f)) {
            let mut g = lock(p);
            if !g.data.is_empty() {
                BARRIER_FLUSHES.fetch_add(1, Relaxed);
                // Frames of a rolled-back transaction (a commit frame writes out its own). Should
                // they ever be a commit's and fail to be written, SQLite must not publish them,
                // and it cannot be told: stop the process before anything is acknowledged.
                let rc = g.flush();
                if rc != ffi::SQLITE_OK {
                    eprintln!(
                        "v2fhir-walbuf: writing WAL frames before publishing them failed (SQLite error {rc}); aborting so that no unwritten transaction is reported committed"
                    );
                    std::process::abort();
                }
            }
        }
        let real = real(f);
        if let Some(m) = (*(*real).pMethods).xShmBarrier {
            m(real);
        }
    }
}

unsafe extern "C" fn shm_unmap(f: *mut ffi::sqlite3_file, delete: c_int) -> c_int {
    // SAFETY: SQLite calls this on our open database file.
    unsafe { forward!(f, xShmUnmap, ffi::SQLITE_OK, delete) }
}

unsafe extern "C" fn fetch(
    f: *mut ffi::sqlite3_file,
    offset: ffi::sqlite3_int64,
    amt: c_int,
    out: *mut *mut c_void,
) -> c_int {
    // SAFETY: SQLite calls this on our open file with a valid out pointer.
    unsafe {
        let real = real(f);
        match (*(*real).pMethods).xFetch {
            Some(m) if (*(*real).pMethods).iVersion >= 3 => m(real, offset, amt, out),
            _ => {
                *out = std::ptr::null_mut();
                ffi::SQLITE_OK
            }
        }
    }
}

unsafe extern "C" fn unfetch(
    f: *mut ffi::sqlite3_file,
    offset: ffi::sqlite3_int64,
    p: *mut c_void,
) -> c_int {
    // SAFETY: SQLite calls this on our open file.
    unsafe {
        let real = real(f);
        match (*(*real).pMethods).xUnfetch {
            Some(m) if (*(*real).pMethods).iVersion >= 3 => m(real, offset, p),
            _ => ffi::SQLITE_OK,
        }
    }
}

// The VFS-level methods go to the underlying VFS.

/// `unsafe extern "C" fn $name(vfs, args…) -> $ret` calling the underlying VFS's `$field`, or
/// returning `$missing` when it has none.
macro_rules! to_underlying {
    ($name:ident, $field:ident, $ret:ty, $missing:expr, ($($arg:ident: $ty:ty),*)) => {
        unsafe extern "C" fn $name(vfs: *mut ffi::sqlite3_vfs $(, $arg: $ty)*) -> $ret {
            // SAFETY: `vfs` is ours (registered by `register`), so pAppData is the underlying
            // VFS, which lives for the process; the arguments are SQLite's, passed on as they are.
            unsafe {
                let u = under(vfs);
                match (*u).$field {
                    Some(m) => m(u $(, $arg)*),
                    None => $missing,
                }
            }
        }
    };
}

to_underlying!(delete, xDelete, c_int, ffi::SQLITE_IOERR_DELETE, (name: *const c_char, sync: c_int));
to_underlying!(access, xAccess, c_int, ffi::SQLITE_IOERR_ACCESS, (name: *const c_char, flags: c_int, out: *mut c_int));
to_underlying!(full_pathname, xFullPathname, c_int, ffi::SQLITE_CANTOPEN, (name: *const c_char, n: c_int, out: *mut c_char));
to_underlying!(dl_open, xDlOpen, *mut c_void, std::ptr::null_mut(), (name: *const c_char));
to_underlying!(dl_error, xDlError, (), (), (n: c_int, out: *mut c_char));
to_underlying!(dl_close, xDlClose, (), (), (handle: *mut c_void));
to_underlying!(randomness, xRandomness, c_int, 0, (n: c_int, out: *mut c_char));
to_underlying!(sleep, xSleep, c_int, 0, (micros: c_int));
to_underlying!(current_time, xCurrentTime, c_int, ffi::SQLITE_ERROR, (out: *mut f64));
to_underlying!(get_last_error, xGetLastError, c_int, 0, (n: c_int, out: *mut c_char));
to_underlying!(current_time_int64, xCurrentTimeInt64, c_int, ffi::SQLITE_ERROR, (out: *mut ffi::sqlite3_int64));

unsafe extern "C" fn dl_sym(
    vfs: *mut ffi::sqlite3_vfs,
    handle: *mut c_void,
    name: *const c_char,
) -> Option<unsafe extern "C" fn(*mut ffi::sqlite3_vfs, *mut c_void, *const c_char)> {
    // SAFETY: `vfs` is ours.
    unsafe {
        let u = under(vfs);
        match (*u).xDlSym {
            Some(m) => m(u, handle, name),
            None => None,
        }
    }
}
