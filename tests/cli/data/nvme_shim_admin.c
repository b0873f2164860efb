/* LD_PRELOAD shim used by make_golden_features.py: /dev/nvme* opens /dev/null and the
 * admin passthru ioctls are answered from files in $SHIM_DIR, so that the real nvme-cli
 * prints what it prints for known completions.
 *
 *   NVME_IOCTL_ID: $SHIM_NSID when set (a namespace block device), else -1/ENOTTY (a
 *     controller character device, as the kernel answers for /dev/nvme0).
 *   Get Features (opcode 0Ah): file gf-<fid>-<sel> (decimal) = dw0 (4 bytes LE), status
 *     (4 bytes LE, the ioctl's return value), then the data returned; no file means
 *     status $SHIM_STATUS, default 4002h (Invalid Field in Command, DNR).
 *   Set Features (opcode 09h): file sf-<fid> = dw0, status (as above), default 0/0; the
 *     data nvme-cli sent goes to sf-<fid>.sent.
 *   Anything else: success, data from op-<opcode>.bin (zero filled when absent).
 * Every admin command is logged to $SHIM_DIR/log, one line each:
 *   op nsid cdw10 cdw11 cdw12 cdw13 cdw14 cdw15 data_len (hex) */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <sys/ioctl.h>
static int fake_fd = -1;
static int redirect(const char *p) { return p && !strncmp(p, "/dev/nvme", 9); }
static int do_open(const char *path, int flags, mode_t mode, const char *sym) {
  int (*ro)(const char *, int, ...) = dlsym(RTLD_NEXT, sym);
  if (redirect(path)) { fake_fd = ro("/dev/null", O_RDWR); return fake_fd; }
  return ro(path, flags, mode);
}
int open(const char *path, int flags, ...) { va_list a; va_start(a, flags); mode_t m = va_arg(a, int); va_end(a); return do_open(path, flags, m, "open"); }
int open64(const char *path, int flags, ...) { va_list a; va_start(a, flags); mode_t m = va_arg(a, int); va_end(a); return do_open(path, flags, m, "open64"); }
int __open_2(const char *path, int flags) { return do_open(path, flags, 0, "open"); }
int __open64_2(const char *path, int flags) { return do_open(path, flags, 0, "open64"); }
int openat(int dfd, const char *path, int flags, ...) { va_list a; va_start(a, flags); mode_t m = va_arg(a, int); va_end(a);
  if (redirect(path)) return do_open(path, flags, m, "open");
  int (*r)(int,const char*,int,...) = dlsym(RTLD_NEXT, "openat"); return r(dfd, path, flags, m); }
int openat64(int dfd, const char *path, int flags, ...) { va_list a; va_start(a, flags); mode_t m = va_arg(a, int); va_end(a);
  if (redirect(path)) return do_open(path, flags, m, "open");
  int (*r)(int,const char*,int,...) = dlsym(RTLD_NEXT, "openat64"); return r(dfd, path, flags, m); }

static FILE *shim_file(const char *name, const char *mode) {
  char p[512]; snprintf(p, sizeof p, "%s/%s", getenv("SHIM_DIR"), name);
  return fopen(p, mode);
}

/* Reads dw0/status/data from name; returns 0 when the file is absent. */
static int answer(const char *name, uint32_t *dw0, uint32_t *status, void *addr, uint32_t len) {
  FILE *f = shim_file(name, "rb");
  if (!f) return 0;
  if (fread(dw0, 4, 1, f) != 1) *dw0 = 0;
  if (fread(status, 4, 1, f) != 1) *status = 0;
  if (addr && len) { memset(addr, 0, len); if (fread(addr, 1, len, f)) {} }
  fclose(f);
  return 1;
}

int ioctl(int fd, unsigned long req, ...) {
  va_list a; va_start(a, req); void *arg = va_arg(a, void *); va_end(a);
  int (*ri)(int, unsigned long, void *) = dlsym(RTLD_NEXT, "ioctl");
  if (fd != fake_fd) return ri(fd, req, arg);
  if ((req & 0xffff) == 0x4e40) { /* NVME_IOCTL_ID */
    const char *n = getenv("SHIM_NSID");
    if (n) return (int)strtoul(n, NULL, 0);
    errno = ENOTTY; return -1;
  }
  if ((req & 0xffff) != 0x4e41 && (req & 0xffff) != 0x4e47) return 0;
  uint8_t *c = arg; uint8_t op = c[0]; uint64_t addr; uint32_t nsid, len, cdw[6];
  memcpy(&nsid, c + 4, 4); memcpy(&addr, c + 24, 8); memcpy(&len, c + 36, 4); memcpy(cdw, c + 40, 24);
  FILE *log = shim_file("log", "a");
  if (log) {
    fprintf(log, "%02x %x %x %x %x %x %x %x %x\n", op, nsid, cdw[0], cdw[1], cdw[2], cdw[3], cdw[4], cdw[5], len);
    fclose(log);
  }
  uint32_t dw0 = 0, status = 0; char name[64];
  void *buf = addr ? (void *)(uintptr_t)addr : NULL;
  if (op == 0x0a) {
    snprintf(name, sizeof name, "gf-%u-%u", cdw[0] & 0xff, (cdw[0] >> 8) & 7);
    if (!answer(name, &dw0, &status, buf, len)) status = getenv("SHIM_STATUS") ? strtoul(getenv("SHIM_STATUS"), NULL, 0) : 0x4002;
  } else if (op == 0x09) {
    snprintf(name, sizeof name, "sf-%u.sent", cdw[0] & 0xff);
    FILE *f = shim_file(name, "wb");
    if (f) { if (buf && len) fwrite(buf, 1, len, f); fclose(f); }
    snprintf(name, sizeof name, "sf-%u", cdw[0] & 0xff);
    answer(name, &dw0, &status, NULL, 0);
  } else {
    snprintf(name, sizeof name, "op-%u.bin", op);
    if (buf && len) { memset(buf, 0, len); FILE *f = shim_file(name, "rb"); if (f) { if (fread(buf, 1, len, f)) {} fclose(f); } }
  }
  if ((req & 0xffff) == 0x4e41) memcpy(c + 68, &dw0, 4);
  else { uint64_t r = dw0; memcpy(c + 72, &r, 8); }
  return (int)status;
}
