/* LD_PRELOAD shim used by make_golden.py: makes /dev/nvme* open /dev/null and answers
 * Identify (CNS = cdw10 & 0xff) and Get Log Page (LID) passthru ioctls from
 * $SHIM_DIR/id-<cns>.bin and log-<lid>.bin (zero filled when absent). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <sys/ioctl.h>
static int fake_fd = -1;
static int (*real_open)(const char *, int, ...);
static int redirect(const char *p) { return p && !strncmp(p, "/dev/nvme", 9); }
static int do_open(const char *path, int flags, mode_t mode, const char *sym) {
  int (*ro)(const char *, int, ...) = dlsym(RTLD_NEXT, sym);
  if (redirect(path)) { fake_fd = ro("/dev/null", O_RDWR); return fake_fd; }
  return ro(path, flags, mode);
}
int open(const char *path, int flags, ...) { va_list a; va_start(a, flags); mode_t m = va_arg(a, int); va_end(a); return do_open(path, flags, m, "open"); }
int open64(const char *path, int flags, ...) { va_list a; va_start(a, flags); mode_t m = va_arg(a, int); va_end(a); return do_open(path, flags, m, "open64"); }
static void fill(const char *name, void *addr, uint32_t len) {
  char p[512]; snprintf(p, sizeof p, "%s/%s", getenv("SHIM_DIR"), name);
  memset(addr, 0, len);
  FILE *f = fopen(p, "rb"); if (!f) return; fread(addr, 1, len, f); fclose(f);
}
int ioctl(int fd, unsigned long req, ...) {
  va_list a; va_start(a, req); void *arg = va_arg(a, void *); va_end(a);
  int (*ri)(int, unsigned long, void *) = dlsym(RTLD_NEXT, "ioctl");
  if (fd != fake_fd) return ri(fd, req, arg);
  if ((req & 0xffff) == 0x4e40) return 1; /* NVME_IOCTL_ID */
  if ((req & 0xffff) == 0x4e41 || (req & 0xffff) == 0x4e47) {
    uint8_t *c = arg; uint8_t op = c[0]; uint64_t addr; uint32_t len, cdw10;
    memcpy(&addr, c + 24, 8); memcpy(&len, c + 36, 4); memcpy(&cdw10, c + 40, 4);
    char name[64];
    if (op == 0x06) snprintf(name, sizeof name, "id-%u.bin", cdw10 & 0xff);
    else if (op == 0x02) snprintf(name, sizeof name, "log-%u.bin", cdw10 & 0xff);
    else snprintf(name, sizeof name, "op-%u.bin", op);
    if (addr && len) fill(name, (void *)(uintptr_t)addr, len);
    return 0;
  }
  return 0;
}
int __open_2(const char *path, int flags) { return do_open(path, flags, 0, "open"); }
int __open64_2(const char *path, int flags) { return do_open(path, flags, 0, "open64"); }
int openat(int dfd, const char *path, int flags, ...) { va_list a; va_start(a, flags); mode_t m = va_arg(a, int); va_end(a);
  if (redirect(path)) return do_open(path, flags, m, "open"); int (*r)(int,const char*,int,...) = dlsym(RTLD_NEXT, "openat"); return r(dfd, path, flags, m); }
int openat64(int dfd, const char *path, int flags, ...) { va_list a; va_start(a, flags); mode_t m = va_arg(a, int); va_end(a);
  if (redirect(path)) return do_open(path, flags, m, "open"); int (*r)(int,const char*,int,...) = dlsym(RTLD_NEXT, "openat64"); return r(dfd, path, flags, m); }
