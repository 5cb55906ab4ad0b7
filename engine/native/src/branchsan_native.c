/*
 * BranchSAN storage helpers: the few Linux calls Node's fs module lacks.
 *
 * Every function is synchronous. All but readInline, writeInline, addressOf, lock,
 * rangeLock and rangeHolder are called only from the storage I/O worker threads;
 * their errors are thrown as Error objects whose `code` is the errno name (e.g. "EOPNOTSUPP"), like Node's own fs errors, so the
 * worker maps them with the same table. readInline runs on the main event loop
 * and never waits on a device (see there); it returns -errno instead of throwing,
 * because EAGAIN is its normal "not cached, use a worker" answer; writeInline, for
 * files in RAM only, returns -errno the same way. peerCred serves the
 * management API socket (who is calling), on the main event loop; outputClosed serves
 * the command line (has the reader of standard output gone?).
 */
#define _GNU_SOURCE
#define NAPI_VERSION 8
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <linux/futex.h>
#include <time.h>
#include <sys/uio.h>
#include <unistd.h>
#include <node_api.h>

#define CHECK(call)                                                     \
  do {                                                                  \
    if ((call) != napi_ok) {                                            \
      napi_throw_error(env, "EINVAL", "branchsan_native: bad argument"); \
      return NULL;                                                      \
    }                                                                   \
  } while (0)

static const char *errno_name(int e) {
  switch (e) {
    case EPERM: return "EPERM";
    case EIO: return "EIO";
    case EBADF: return "EBADF";
    case EACCES: return "EACCES";
    case EINVAL: return "EINVAL";
    case EFBIG: return "EFBIG";
    case ENOSPC: return "ENOSPC";
    case EROFS: return "EROFS";
    case ENOTTY: return "ENOTTY";
    case ENODEV: return "ENODEV";
    case ENOSYS: return "ENOSYS";
    case EOPNOTSUPP: return "EOPNOTSUPP";
    case EDQUOT: return "EDQUOT";
    case EINTR: return "EINTR";
    case ETXTBSY: return "ETXTBSY";
    case ESPIPE: return "ESPIPE";
    case ENOTSOCK: return "ENOTSOCK";
    default: return "EUNKNOWN";
  }
}

static napi_value throw_errno(napi_env env, const char *what, int e) {
  char msg[160];
  snprintf(msg, sizeof msg, "%s failed: %s (%s)", what, strerror(e), errno_name(e));
  napi_value code, text, err, errnum;
  napi_create_string_utf8(env, errno_name(e), NAPI_AUTO_LENGTH, &code);
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &text);
  napi_create_error(env, code, text, &err);
  napi_create_int32(env, -e, &errnum);
  napi_set_named_property(env, err, "errno", errnum);
  napi_throw(env, err);
  return NULL;
}

/* Reads n numeric arguments: fd first, then 64-bit offsets/lengths as doubles
 * (exact up to 2^53 bytes, far beyond any device we serve). */
static int get_args(napi_env env, napi_callback_info info, size_t n, double *out) {
  napi_value argv[4];
  size_t argc = 4;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < n) return -1;
  for (size_t i = 0; i < n; i++) {
    if (napi_get_value_double(env, argv[i], &out[i]) != napi_ok) return -1;
  }
  return 0;
}

/* fallocate(fd, mode, offset, length): punch holes / zero ranges in files. */
static napi_value js_fallocate(napi_env env, napi_callback_info info) {
  double a[4];
  if (get_args(env, info, 4, a)) return throw_errno(env, "fallocate", EINVAL);
  int r;
  do {
    r = fallocate((int)a[0], (int)a[1], (off_t)a[2], (off_t)a[3]);
  } while (r < 0 && errno == EINTR);
  if (r < 0) return throw_errno(env, "fallocate", errno);
  return NULL;
}

/* ioctl on a block device with a {start, length} range (BLKDISCARD, BLKZEROOUT). */
static napi_value range_ioctl(napi_env env, napi_callback_info info, unsigned long req,
                              const char *what) {
  double a[3];
  if (get_args(env, info, 3, a)) return throw_errno(env, what, EINVAL);
  uint64_t range[2] = {(uint64_t)a[1], (uint64_t)a[2]};
  if (ioctl((int)a[0], req, range) < 0) return throw_errno(env, what, errno);
  return NULL;
}

static napi_value js_blkdiscard(napi_env env, napi_callback_info info) {
  return range_ioctl(env, info, BLKDISCARD, "BLKDISCARD");
}

static napi_value js_blkzeroout(napi_env env, napi_callback_info info) {
  return range_ioctl(env, info, BLKZEROOUT, "BLKZEROOUT");
}

/* blkgetsize64(fd): device capacity in bytes. */
static napi_value js_blkgetsize64(napi_env env, napi_callback_info info) {
  double a[1];
  if (get_args(env, info, 1, a)) return throw_errno(env, "BLKGETSIZE64", EINVAL);
  uint64_t size = 0;
  if (ioctl((int)a[0], BLKGETSIZE64, &size) < 0) return throw_errno(env, "BLKGETSIZE64", errno);
  napi_value out;
  CHECK(napi_create_double(env, (double)size, &out));
  return out;
}

/* The element type, first byte and length in elements of the typed array `v`. */
static napi_status typed_array(napi_env env, napi_value v, napi_typedarray_type *type,
                               void **data, size_t *len) {
  napi_value ab;
  size_t byte_offset = 0;
  return napi_get_typedarray_info(env, v, type, len, data, &ab, &byte_offset);
}

/* addressMod(typedArray, n): the data pointer modulo n, so O_DIRECT users can
 * place buffers on an aligned boundary inside a (shared) ArrayBuffer. */
static napi_value js_address_mod(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  size_t argc = 2;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 2) return throw_errno(env, "addressMod", EINVAL);
  void *data = NULL;
  size_t len = 0;
  napi_typedarray_type type;
  CHECK(typed_array(env, argv[0], &type, &data, &len));
  uint32_t n = 0;
  CHECK(napi_get_value_uint32(env, argv[1], &n));
  if (n == 0) return throw_errno(env, "addressMod", EINVAL);
  napi_value out;
  CHECK(napi_create_uint32(env, (uint32_t)((uintptr_t)data % n), &out));
  return out;
}

/* addressOf(typedArray): where its bytes are, as a number (x86-64 and arm64 user
 * addresses fit a double exactly). The main thread hands it with the array's length to
 * an I/O thread, which reads or writes those bytes with readAt/writeAt instead of going
 * through a copy in a shared slot (a SharedArrayBuffer, the only memory a worker's
 * JavaScript can touch: V8 copies into it with relaxed atomic byte moves, about 4x
 * slower than memmove). The caller keeps the array alive and unmoved until the thread
 * is done with it: it holds a reference, and backing stores of ArrayBuffers do not move
 * (napi_get_typedarray_info moves a small on-heap array out of the heap for good).
 * Answers 0 when the bytes cannot be handed over this way. */
static napi_value js_address_of(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  size_t argc = 1;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1) return throw_errno(env, "addressOf", EINVAL);
  void *data = NULL;
  size_t len = 0;
  napi_typedarray_type type;
  CHECK(typed_array(env, argv[0], &type, &data, &len));
  if (type != napi_uint8_array) return throw_errno(env, "addressOf", EINVAL);
  napi_value out;
  /* 0 (use the slots) for an address a double cannot hold exactly (5-level paging), or
   * for an empty array, which may have no memory at all. */
  uintptr_t at = (uintptr_t)data;
  CHECK(napi_create_double(env, len == 0 || at >= ((uintptr_t)1 << 53) ? 0 : (double)at, &out));
  return out;
}

/* writeAt(fd, address, length, offset) and readAt(fd, address, length, offset): one
 * pwrite from / pread into the bytes at address (see addressOf), on an I/O thread.
 * Return the bytes moved (short counts as the system call gave them; the caller loops);
 * errors throw like fallocate's. */
static napi_value pio_at(napi_env env, napi_callback_info info, int write) {
  double a[4];
  const char *what = write ? "pwrite" : "pread";
  if (get_args(env, info, 4, a) || a[1] <= 0 || a[2] < 0 || a[3] < 0)
    return throw_errno(env, what, EINVAL);
  void *p = (void *)(uintptr_t)a[1];
  ssize_t r;
  do {
    r = write ? pwrite((int)a[0], p, (size_t)a[2], (off_t)a[3])
              : pread((int)a[0], p, (size_t)a[2], (off_t)a[3]);
  } while (r < 0 && errno == EINTR);
  if (r < 0) return throw_errno(env, what, errno);
  napi_value out;
  CHECK(napi_create_double(env, (double)r, &out));
  return out;
}

static napi_value js_write_at(napi_env env, napi_callback_info info) {
  return pio_at(env, info, 1);
}

static napi_value js_read_at(napi_env env, napi_callback_info info) {
  return pio_at(env, info, 0);
}

/* The (fd, Uint8Array, offset) that readInline and writeInline start with. */
typedef struct {
  int32_t fd;
  void *data;
  size_t len;
  double offset;
} inline_io;

/* Reads inline_io from argv[0..2]; false after throwing EINVAL (as `what`). */
static bool inline_args(napi_env env, napi_value *argv, size_t argc, size_t need,
                        const char *what, inline_io *io) {
  napi_typedarray_type type;
  if (argc < need || napi_get_value_int32(env, argv[0], &io->fd) != napi_ok ||
      typed_array(env, argv[1], &type, &io->data, &io->len) != napi_ok ||
      napi_get_value_double(env, argv[2], &io->offset) != napi_ok ||
      type != napi_uint8_array || io->offset < 0) {
    throw_errno(env, what, EINVAL);
    return false;
  }
  return true;
}

/* readInline(fd, typedArray, offset, nowait): one pread into the whole array.
 * With nowait it is preadv2(RWF_NOWAIT): the kernel copies from the page cache
 * or answers EAGAIN at once instead of starting device I/O, so the event loop can
 * serve cached reads itself and hand only misses to a worker (io_uring's own
 * order). Returns bytes read, or -errno (EAGAIN: not cached; EOPNOTSUPP: the
 * file system has no NOWAIT reads). Argument errors still throw. */
static napi_value js_read_inline(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  size_t argc = 4;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  inline_io io;
  bool nowait = false;
  if (!inline_args(env, argv, argc, 4, "readInline", &io)) return NULL;
  CHECK(napi_get_value_bool(env, argv[3], &nowait));
  struct iovec iov = {io.data, io.len};
  ssize_t r;
  do {
    r = preadv2(io.fd, &iov, 1, (off_t)io.offset, nowait ? RWF_NOWAIT : 0);
  } while (r < 0 && errno == EINTR);
  napi_value out;
  CHECK(napi_create_double(env, r < 0 ? -(double)errno : (double)r, &out));
  return out;
}

/* writeInline(fd, typedArray, offset): pwrite the whole array, on the main event
 * loop; only for a file whose pages are RAM (tmpfs without swap), where a write
 * never waits on a device. Loops over short writes (the next call says why one was
 * short). Returns the bytes written, or -errno; argument errors throw. */
static napi_value js_write_inline(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  size_t argc = 3;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  inline_io io;
  if (!inline_args(env, argv, argc, 3, "writeInline", &io)) return NULL;
  size_t done = 0;
  ssize_t r = 0;
  while (done < io.len) {
    r = pwrite(io.fd, (char *)io.data + done, io.len - done, (off_t)io.offset + (off_t)done);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    done += (size_t)r;
  }
  napi_value out;
  double result = done == io.len ? (double)io.len : r < 0 ? -(double)errno : -(double)EIO;
  CHECK(napi_create_double(env, result, &out));
  return out;
}

/* lock(fd, exclusive): flock(LOCK_EX or LOCK_SH | LOCK_NB) on the open file, so two
 * processes never serve one backing file. The lock belongs to the open file
 * description and goes with its last close. Returns 0, or -errno (EWOULDBLOCK:
 * another open file holds a conflicting lock). Never waits. */
static napi_value js_lock(napi_env env, napi_callback_info info) {
  double a[2];
  if (get_args(env, info, 2, a)) return throw_errno(env, "lock", EINVAL);
  int r;
  do {
    r = flock((int)a[0], (a[1] != 0 ? LOCK_EX : LOCK_SH) | LOCK_NB);
  } while (r < 0 && errno == EINTR);
  napi_value out;
  CHECK(napi_create_int32(env, r < 0 ? -errno : 0, &out));
  return out;
}

/* fcntl(fd, cmd, fl) for an OFD lock call on [start, start+len) of type `type` (len 0:
 * to the end of the file, however it grows), retried on EINTR. Returns 0 or -errno. */
static int ofd_lock_call(int fd, int cmd, short type, off_t start, off_t len, struct flock *fl) {
  memset(fl, 0, sizeof *fl);
  fl->l_type = type;
  fl->l_whence = SEEK_SET;
  fl->l_start = start;
  fl->l_len = len;
  int r;
  do {
    r = fcntl(fd, cmd, fl);
  } while (r < 0 && errno == EINTR);
  return r < 0 ? -errno : 0;
}

/* rangeLock(fd, exclusive): an open file description (OFD) lock over the whole file,
 * F_WRLCK or F_RDLCK, F_OFD_SETLK (never waits). flock() and fcntl() locks do not see
 * each other on Linux; QEMU and libvirt guard disk images with OFD byte-range locks,
 * so this is the lock they see. It belongs to the open file description, as the
 * flock does. Returns 0, or -errno (EAGAIN or EACCES: another open file holds a
 * conflicting lock). */
static napi_value js_range_lock(napi_env env, napi_callback_info info) {
  double a[2];
  if (get_args(env, info, 2, a)) return throw_errno(env, "rangeLock", EINVAL);
  struct flock fl;
  int r = ofd_lock_call((int)a[0], F_OFD_SETLK, a[1] != 0 ? F_WRLCK : F_RDLCK, 0, 0, &fl);
  napi_value out;
  CHECK(napi_create_int32(env, r, &out));
  return out;
}

/* rangeHolder(fd, start, len): a lock another open file holds on the byte range, as
 * [start, length] (length 0: to the end of the file), or null when there is none
 * (F_OFD_GETLK with F_WRLCK, so a shared lock counts; locks of this open file
 * description are not reported). QEMU marks each permission it holds on an image
 * with a shared lock on one byte (100 + the permission's bit: 101 is "write"), so
 * this tells a read-only open that a running VM writes the image. A number is
 * -errno. */
static napi_value js_range_holder(napi_env env, napi_callback_info info) {
  double a[3];
  if (get_args(env, info, 3, a) || a[1] < 0 || a[2] < 1)
    return throw_errno(env, "rangeHolder", EINVAL);
  struct flock fl;
  int r = ofd_lock_call((int)a[0], F_OFD_GETLK, F_WRLCK, (off_t)a[1], (off_t)a[2], &fl);
  napi_value out, v;
  if (r < 0) {
    CHECK(napi_create_int32(env, r, &out));
  } else if (fl.l_type == F_UNLCK) {
    CHECK(napi_get_null(env, &out));
  } else {
    CHECK(napi_create_array_with_length(env, 2, &out));
    CHECK(napi_create_double(env, (double)fl.l_start, &v));
    CHECK(napi_set_element(env, out, 0, v));
    CHECK(napi_create_double(env, (double)fl.l_len, &v));
    CHECK(napi_set_element(env, out, 1, v));
  }
  return out;
}

/* peerCred(fd): the process at the other end of a connected Unix socket, as the kernel
 * recorded it at connect (SO_PEERCRED): {pid, uid, gid}. Never waits. */
static napi_value js_peer_cred(napi_env env, napi_callback_info info) {
  double a[1];
  if (get_args(env, info, 1, a)) return throw_errno(env, "peerCred", EINVAL);
  struct ucred cred;
  socklen_t len = sizeof cred;
  if (getsockopt((int)a[0], SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
    return throw_errno(env, "getsockopt(SO_PEERCRED)", errno);
  napi_value out, v;
  CHECK(napi_create_object(env, &out));
  CHECK(napi_create_int64(env, cred.pid, &v));
  CHECK(napi_set_named_property(env, out, "pid", v));
  CHECK(napi_create_uint32(env, cred.uid, &v));
  CHECK(napi_set_named_property(env, out, "uid", v));
  CHECK(napi_create_uint32(env, cred.gid, &v));
  CHECK(napi_set_named_property(env, out, "gid", v));
  return out;
}

/* outputClosed(fd): whether nobody will ever read what is written to fd: a pipe whose
 * reading end is closed (POLLERR), a hung-up terminal or a socket shut down in both
 * directions (POLLHUP). Asks poll() with no events and no timeout, so it never waits
 * and writes nothing. A file never reports either. Returns -errno on failure. */
static napi_value js_output_closed(napi_env env, napi_callback_info info) {
  double a[1];
  if (get_args(env, info, 1, a) || a[0] < 0) return throw_errno(env, "outputClosed", EINVAL);
  struct pollfd p = {(int)a[0], 0, 0};
  int r;
  do {
    r = poll(&p, 1, 0);
  } while (r < 0 && errno == EINTR);
  napi_value out;
  if (r < 0) {
    CHECK(napi_create_int32(env, -errno, &out));
  } else if (p.revents & POLLNVAL) {
    CHECK(napi_create_int32(env, -EBADF, &out));
  } else {
    CHECK(napi_get_boolean(env, (p.revents & (POLLERR | POLLHUP)) != 0, &out));
  }
  return out;
}

/* The element argv[1] of the Int32Array argv[0], as a futex word (futexWait/futexWake). */
static int32_t *futex_word(napi_env env, napi_value *argv) {
  void *data = NULL;
  size_t len = 0;
  napi_typedarray_type type;
  uint32_t index = 0;
  if (typed_array(env, argv[0], &type, &data, &len) != napi_ok ||
      type != napi_int32_array || napi_get_value_uint32(env, argv[1], &index) != napi_ok ||
      index >= len)
    return NULL;
  return (int32_t *)data + index;
}

/* futexWait(int32Array, index, expected, timeoutMs): sleeps while the element holds
 * `expected`, at most timeoutMs, as Atomics.wait does, but on the kernel futex itself
 * (see sleepOnDoorbell in io-worker.ts for why). The array must be over a
 * SharedArrayBuffer and its wakers must use futexWake: Atomics.notify does not see this
 * sleeper. Returns 1 when the timeout ended it, else 0 (woken, or the value differed). */
static napi_value js_futex_wait(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  size_t argc = 4;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 4) return throw_errno(env, "futexWait", EINVAL);
  int32_t *word = futex_word(env, argv);
  int32_t expected = 0;
  double ms = 0;
  if (!word || napi_get_value_int32(env, argv[2], &expected) != napi_ok ||
      napi_get_value_double(env, argv[3], &ms) != napi_ok || ms < 0 || ms > 1e9)
    return throw_errno(env, "futexWait", EINVAL);
  long long ns = (long long)(ms * 1e6);
  struct timespec ts = {(time_t)(ns / 1000000000LL), (long)(ns % 1000000000LL)};
  long r = syscall(SYS_futex, word, FUTEX_WAIT, expected, &ts, NULL, 0);
  napi_value out;
  CHECK(napi_create_int32(env, r < 0 && errno == ETIMEDOUT ? 1 : 0, &out));
  return out;
}

/* futexWake(int32Array, index, count): wakes up to count threads in futexWait on that
 * element: one system call, no lock in user space. Returns how many, or -errno. */
static napi_value js_futex_wake(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  size_t argc = 3;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 3) return throw_errno(env, "futexWake", EINVAL);
  int32_t *word = futex_word(env, argv);
  int32_t count = 0;
  if (!word || napi_get_value_int32(env, argv[2], &count) != napi_ok || count < 1)
    return throw_errno(env, "futexWake", EINVAL);
  long r = syscall(SYS_futex, word, FUTEX_WAKE, count, NULL, NULL, 0);
  napi_value out;
  CHECK(napi_create_int32(env, r < 0 ? -errno : (int32_t)r, &out));
  return out;
}

static napi_value int_const(napi_env env, int v) {
  napi_value out;
  napi_create_int32(env, v, &out);
  return out;
}

NAPI_MODULE_INIT() {
  napi_property_descriptor props[] = {
      {"fallocate", NULL, js_fallocate, NULL, NULL, NULL, napi_enumerable, NULL},
      {"blkdiscard", NULL, js_blkdiscard, NULL, NULL, NULL, napi_enumerable, NULL},
      {"blkzeroout", NULL, js_blkzeroout, NULL, NULL, NULL, napi_enumerable, NULL},
      {"blkgetsize64", NULL, js_blkgetsize64, NULL, NULL, NULL, napi_enumerable, NULL},
      {"addressMod", NULL, js_address_mod, NULL, NULL, NULL, napi_enumerable, NULL},
      {"readInline", NULL, js_read_inline, NULL, NULL, NULL, napi_enumerable, NULL},
      {"writeInline", NULL, js_write_inline, NULL, NULL, NULL, napi_enumerable, NULL},
      {"addressOf", NULL, js_address_of, NULL, NULL, NULL, napi_enumerable, NULL},
      {"writeAt", NULL, js_write_at, NULL, NULL, NULL, napi_enumerable, NULL},
      {"readAt", NULL, js_read_at, NULL, NULL, NULL, napi_enumerable, NULL},
      {"lock", NULL, js_lock, NULL, NULL, NULL, napi_enumerable, NULL},
      {"rangeLock", NULL, js_range_lock, NULL, NULL, NULL, napi_enumerable, NULL},
      {"rangeHolder", NULL, js_range_holder, NULL, NULL, NULL, napi_enumerable, NULL},
      {"peerCred", NULL, js_peer_cred, NULL, NULL, NULL, napi_enumerable, NULL},
      {"outputClosed", NULL, js_output_closed, NULL, NULL, NULL, napi_enumerable, NULL},
      {"futexWait", NULL, js_futex_wait, NULL, NULL, NULL, napi_enumerable, NULL},
      {"futexWake", NULL, js_futex_wake, NULL, NULL, NULL, napi_enumerable, NULL},
      {"FALLOC_FL_KEEP_SIZE", NULL, NULL, NULL, NULL, int_const(env, FALLOC_FL_KEEP_SIZE),
       napi_enumerable, NULL},
      {"FALLOC_FL_PUNCH_HOLE", NULL, NULL, NULL, NULL, int_const(env, FALLOC_FL_PUNCH_HOLE),
       napi_enumerable, NULL},
      {"FALLOC_FL_ZERO_RANGE", NULL, NULL, NULL, NULL, int_const(env, FALLOC_FL_ZERO_RANGE),
       napi_enumerable, NULL},
  };
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok)
    return NULL;
  return exports;
}
