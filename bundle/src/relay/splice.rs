//! Moving one relayed connection's bytes, each direction on its own: a copy loop through a
//! buffer that grows for bulk transfers (the default), or `splice(2)` through a pipe
//! (`BOTTLE_RELAY_SPLICE=1`).
//!
//! Measured on this project's 2-core machine (kernel 6.18, `cargo bench --bench relay`, 1 GiB
//! each way against direct loopback TCP, alternating): the copy loop with a 1 MiB buffer
//! took 0.92-0.96x the direct time uploading and 1.09-1.21x downloading; splicing took
//! 1.08-1.19x and 1.56-1.67x (a Unix socket's `splice_read` goes skb by skb and copies each
//! one's linear part anyway), and the copy loop with 256 KiB buffers 0.94x and 1.37x. So the
//! copy loop is the default; splice stays as a switch for kernels where it measures better.
//! Where splicing is asked for and the kernel refuses it (gVisor answers `EINVAL`), the first
//! refusal is remembered for the process and every direction from then on, that one
//! included, is copied instead, with nothing lost (a refused splice moves nothing, and what
//! an earlier one left in the pipe is read back out and sent first).
//!
//! The syscalls come from `rustix` (`pipe_with`, `splice`, `fcntl_setpipe_size`, and
//! `SO_SNDBUF` in `relay.rs`): the workspace denies `unsafe`, so the wrappers have to be a
//! crate's, and rustix's are safe, typed (`AsFd`/`OwnedFd` in, `Errno` out, so a refusal is
//! a plain comparison), kept by the Bytecode Alliance, and already in the lock file
//! (tempfile, crossterm). `nix`, which we use for signals, has them too, behind features we
//! would add, with libc's untyped flags.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use rustix::io::Errno;
use rustix::pipe::{PipeFlags, SpliceFlags, fcntl_setpipe_size, pipe_with, splice};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::{TcpStream, UnixStream};

use super::RELAY_BUFFER;

/// The capacity a direction's pipe is raised to (`F_SETPIPE_SZ`) once it carries a bulk
/// transfer (a read filled half the default pipe), within [`GROWN_BUDGET`]. Refused beyond
/// `/proc/sys/fs/pipe-max-size` or the uid's pipe pages; the kernel's default then stays,
/// which still splices, only in smaller steps.
pub const PIPE_SIZE: usize = 1024 * 1024;
/// A new pipe's capacity (the kernel's default, 16 pages).
const DEFAULT_PIPE: usize = 64 * 1024;
/// At most this much grown pipe capacity in the process at once. The kernel charges pipe
/// capacity to the uid (`/proc/sys/fs/pipe-user-pages-soft`, 64 MiB by default) and gives a
/// uid over it two-page pipes: half is kept for the default pipes of [`super::MAX_RELAYED`]
/// connections (two each, 32 MiB), so growing never shrinks another connection's pipe.
const GROWN_BUDGET: usize = 32 * 1024 * 1024;
static GROWN: AtomicUsize = AtomicUsize::new(0);

/// Set (to `1`) in the relay's environment, connections are spliced through pipes instead of
/// copied (see the module's measurements).
pub const SPLICE_ENV: &str = "BOTTLE_RELAY_SPLICE";

/// A direction's copy buffer grows from [`RELAY_BUFFER`] to this once a read fills it (a bulk
/// transfer), within [`BULK_BUDGET`]: 1 MiB measured 1.09-1.21x the direct time downloading,
/// 256 KiB 1.37x, 2 and 4 MiB no better than 1 MiB.
pub const BULK_BUFFER: usize = 1024 * 1024;
/// At most this much grown copy buffer in the process at once (32 bulk directions); beyond
/// it a direction keeps its [`RELAY_BUFFER`]. The relay's memory stays bounded by
/// [`super::MAX_RELAYED`] connections' two small buffers plus this.
const BULK_BUDGET: usize = 32 * 1024 * 1024;
static BULK: AtomicUsize = AtomicUsize::new(0);

/// Set once the kernel refused a splice: later directions go straight to the copy loop.
static REFUSED: AtomicBool = AtomicBool::new(false);
static SPLICE: LazyLock<bool> =
    LazyLock::new(|| std::env::var_os(SPLICE_ENV).is_some_and(|v| v == "1"));

/// Relays `tcp` and `unix` both ways until both directions ended: each one's EOF is passed
/// on as a shutdown of the other side's write half, and the other direction keeps going.
/// The first error ends both.
pub async fn both_ways(tcp: &mut TcpStream, unix: &mut UnixStream) -> io::Result<()> {
    let (mut tcp_read, mut tcp_write) = tcp.split();
    let (mut unix_read, mut unix_write) = unix.split();
    tokio::try_join!(
        one_way(&mut tcp_read, &mut unix_write),
        one_way(&mut unix_read, &mut tcp_write),
    )?;
    Ok(())
}

/// A tokio socket that can run a syscall on its readiness.
trait Ready: AsFd + Sync {
    fn ready_io<R: Send>(
        &self,
        interest: Interest,
        f: impl FnMut() -> io::Result<R> + Send,
    ) -> impl Future<Output = io::Result<R>> + Send;
}

/// Both socket types have the same inherent `async_io`; the trait names it once.
macro_rules! ready_by_async_io {
    ($($socket:ty),*) => {$(
        impl Ready for $socket {
            fn ready_io<R: Send>(
                &self,
                interest: Interest,
                f: impl FnMut() -> io::Result<R> + Send,
            ) -> impl Future<Output = io::Result<R>> + Send {
                self.async_io(interest, f)
            }
        }
    )*};
}

ready_by_async_io!(TcpStream, UnixStream);

/// Copies `from` to `to` until `from`'s EOF, then shuts `to`'s write half.
async fn one_way<R, W, RS, WS>(from: &mut R, to: &mut W) -> io::Result<()>
where
    R: AsyncRead + Unpin + AsRef<RS>,
    W: AsyncWrite + Unpin + AsRef<WS>,
    RS: Ready,
    WS: Ready,
{
    if *SPLICE && !REFUSED.load(Ordering::Relaxed) {
        match spliced(from.as_ref(), to.as_ref()).await? {
            Spliced::Done => return to.shutdown().await,
            Spliced::Refused(left) => to.write_all(&left).await?,
        }
    }
    copied(from, to).await?;
    to.shutdown().await
}

/// How [`spliced`] ended.
enum Spliced {
    /// `from` reached EOF and everything read was written.
    Done,
    /// Splice is not available; holds what was read but not yet written.
    Refused(Vec<u8>),
}

/// The errors with which the kernel (or a sandbox's) says it will not splice these
/// descriptors, as opposed to the connection failing.
fn refusal(e: Errno) -> bool {
    e == Errno::INVAL || e == Errno::NOSYS || e == Errno::OPNOTSUPP
}

/// `from` -> pipe -> `to`, on the sockets' readiness, until `from`'s EOF.
async fn spliced<RS: Ready, WS: Ready>(from: &RS, to: &WS) -> io::Result<Spliced> {
    // Out of descriptors and the like: this direction is copied; the next may splice.
    let mut pipe = match Pipe::new() {
        Ok(pipe) => pipe,
        Err(e) => {
            tracing::debug!(error = %e, "cannot make a relay pipe; copying this direction");
            return Ok(Spliced::Refused(Vec::new()));
        }
    };
    let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
    // Bytes in the pipe. Only read into an empty pipe: an `EAGAIN` then means `from` has
    // nothing (not that the pipe is full), and the readiness tokio clears on it is right.
    let mut held = 0usize;
    let mut refused = None;
    loop {
        if held == 0 {
            let read = from
                .ready_io(Interest::READABLE, || {
                    splice(from, None, &pipe.into, None, pipe.capacity, flags).map_err(|e| {
                        if refusal(e) {
                            refused = Some(e);
                        }
                        io::Error::from(e)
                    })
                })
                .await;
            match read {
                Ok(0) => return Ok(Spliced::Done),
                Ok(n) => {
                    held = n;
                    if n >= DEFAULT_PIPE / 2 {
                        pipe.grow();
                    }
                }
                Err(_) if refused.is_some() => break,
                Err(e) => return Err(e),
            }
        }
        let written = to
            .ready_io(Interest::WRITABLE, || {
                splice(&pipe.out, None, to, None, held, flags).map_err(|e| {
                    if refusal(e) {
                        refused = Some(e);
                    }
                    io::Error::from(e)
                })
            })
            .await;
        match written {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => held -= n,
            Err(_) if refused.is_some() => break,
            Err(e) => return Err(e),
        }
    }
    if !REFUSED.swap(true, Ordering::Relaxed) {
        tracing::info!(error = ?refused, "the kernel refuses to splice relayed sockets; copying instead");
    }
    Ok(Spliced::Refused(drain(&pipe.out, held)?))
}

/// One direction's pipe, closed with it (pipes cost kernel memory: a burst of connections
/// must not leave them behind).
struct Pipe {
    out: OwnedFd,
    into: OwnedFd,
    capacity: usize,
    /// Capacity taken from [`GROWN_BUDGET`], given back on drop.
    grown: usize,
    tried: bool,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let (out, into) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
        Ok(Pipe {
            out,
            into,
            capacity: DEFAULT_PIPE,
            grown: 0,
            tried: false,
        })
    }

    /// Raises the capacity to [`PIPE_SIZE`] once, if the budget and the kernel allow.
    fn grow(&mut self) {
        if std::mem::replace(&mut self.tried, true) {
            return;
        }
        let reserved = GROWN.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |grown| {
            (grown + PIPE_SIZE <= GROWN_BUDGET).then_some(grown + PIPE_SIZE)
        });
        if reserved.is_err() {
            return;
        }
        match fcntl_setpipe_size(&self.into, PIPE_SIZE) {
            Ok(capacity) => {
                self.capacity = capacity;
                self.grown = PIPE_SIZE;
            }
            Err(e) => {
                GROWN.fetch_sub(PIPE_SIZE, Ordering::Relaxed);
                tracing::debug!(error = %e, "relay pipe kept at its default size");
            }
        }
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        GROWN.fetch_sub(self.grown, Ordering::Relaxed);
    }
}

/// Reads the `held` bytes left in a pipe.
fn drain(out: &OwnedFd, held: usize) -> io::Result<Vec<u8>> {
    let mut left = vec![0u8; held];
    let mut got = 0;
    while got < held {
        match rustix::io::read(out, &mut left[got..])? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => got += n,
        }
    }
    Ok(left)
}

/// The copy loop: through one [`RELAY_BUFFER`], allocated for this direction and freed with
/// it, grown to [`BULK_BUFFER`] once a read fills it if [`BULK_BUDGET`] allows.
async fn copied<R, W>(from: &mut R, to: &mut W) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; RELAY_BUFFER];
    let mut bulk = Bulk(0);
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return to.flush().await;
        }
        to.write_all(&buf[..n]).await?;
        if n == buf.len() && bulk.0 == 0 && bulk.take() {
            buf = vec![0u8; BULK_BUFFER];
        }
    }
}

/// Grown buffer capacity held by one direction, given back to [`BULK_BUDGET`] on drop.
struct Bulk(usize);

impl Bulk {
    /// Reserves [`BULK_BUFFER`] from the budget; false when it is spent.
    fn take(&mut self) -> bool {
        let reserved = BULK.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
            (held + BULK_BUFFER <= BULK_BUDGET).then_some(held + BULK_BUFFER)
        });
        if reserved.is_ok() {
            self.0 = BULK_BUFFER;
        }
        reserved.is_ok()
    }
}

impl Drop for Bulk {
    fn drop(&mut self) {
        BULK.fetch_sub(self.0, Ordering::Relaxed);
    }
}
