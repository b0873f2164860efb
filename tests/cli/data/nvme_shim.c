/* LD_PRELOAD shim used by make_golden.py: makes /dev/nvme* open /dev/null and answers nvme-cli's
 * passthru ioctls from files in $SHIM_DIR (zero filled when absent):
 *   Identify (opcode 06h)            id-<cns>.bin   (CNS = cdw10 & 0xff)
 *   Get Log Page (opcode 02h)        log-<lid>.bin, or log-<lid>-csi<csi>.bin when CSI != 0; the log page
 *                                    offset (cdw12/13) is honoured
 *   Property Get (Fabrics 7Fh/04h)   the 4 or 8 bytes at cdw11 of regs.bin; when the file "props" exists
 *                                    (offsets in hex, one a line) other offsets fail with Invalid Field
 *                                    in Command with DNR (status 4002h) as a Fabrics target answers, or
 *                                    without DNR (0002h) when SHIM_NODNR is set
 *   NVME_IOCTL_ID                    $SHIM_NSID (default 1); SHIM_NSID=0 plays a controller character
 *                                    device (ENOTTY, as the kernel answers for /dev/nvme0)
 * With SHIM_PCI set, libnvme's nvme_scan_ctrl() "finds" the controller with its sysfs directory at
 * $SHIM_DIR/sysfs, so that show-regs maps $SHIM_DIR/sysfs/device/resource0 (the BAR) as over PCIe. */
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
static unsigned char fake[4096];
static int is_fake(int fd) { return fd >= 0 && fd < 4096 && fake[fd]; }
static int redirect(const char *p) { return p && !strncmp(p, "/dev/nvme", 9); }
static int do_open(const char *path, int flags, mode_t mode, const char *sym) {
  int (*ro)(const char *, int, ...) = dlsym(RTLD_NEXT, sym);
  if (redirect(path)) { int fd = ro("/dev/null", O_RDWR); if (fd >= 0 && fd < 4096) fake[fd] = 1; return fd; }
  return ro(path, flags, mode);
}
int open(const char *path, int flags, ...) { va_list a; va_start(a, flags); mode_t m = va_arg(a, int); va_end(a); return do_open(path, flags, m, "open"); }
int open64(const char *path, int flags, ...) { va_list a; va_start(a, flags); mode_t m = va_arg(a, int); va_end(a); return do_open(path, flags, m, "open64"); }
int close(int fd) { int (*rc)(int) = dlsym(RTLD_NEXT, "close"); if (fd >= 0 && fd < 4096) fake[fd] = 0; return rc(fd); }
static FILE *shim_file(const char *name) {
  char p[512]; snprintf(p, sizeof p, "%s/%s", getenv("SHIM_DIR"), name);
  return fopen(p, "rb");
}
static void fill(const char *name, void *addr, uint32_t len, uint64_t offset) {
  memset(addr, 0, len);
  FILE *f = shim_file(name); if (!f) return;
  if (fseek(f, (long)offset, SEEK_SET) == 0) fread(addr, 1, len, f);
  fclose(f);
}
static int property_known(uint32_t offset) {
  FILE *f = shim_file("props"); if (!f) return 1;
  unsigned int o; int known = 0;
  while (fscanf(f, "%x", &o) == 1) if (o == offset) known = 1;
  fclose(f); return known;
}
int ioctl(int fd, unsigned long req, ...) {
  va_list a; va_start(a, req); void *arg = va_arg(a, void *); va_end(a);
  int (*ri)(int, unsigned long, void *) = dlsym(RTLD_NEXT, "ioctl");
  if (!is_fake(fd)) return ri(fd, req, arg);
  if ((req & 0xffff) == 0x4e40) { /* NVME_IOCTL_ID */
    const char *n = getenv("SHIM_NSID"); int nsid = n ? atoi(n) : 1;
    if (!nsid) { errno = ENOTTY; return -1; }
    return nsid;
  }
  if ((req & 0xffff) == 0x4e41 || (req & 0xffff) == 0x4e47) {
    int wide = (req & 0xffff) == 0x4e47;
    uint8_t *c = arg; uint8_t op = c[0]; uint64_t addr; uint32_t len, cdw10, cdw11, cdw12, cdw13, cdw14, nsid;
    memcpy(&nsid, c + 4, 4); memcpy(&addr, c + 24, 8); memcpy(&len, c + 36, 4);
    memcpy(&cdw10, c + 40, 4); memcpy(&cdw11, c + 44, 4); memcpy(&cdw12, c + 48, 4);
    memcpy(&cdw13, c + 52, 4); memcpy(&cdw14, c + 56, 4);
    char name[64]; uint64_t offset = 0;
    if (op == 0x7f && (nsid & 0xff) == 0x04) { /* Property Get */
      uint64_t value = 0;
      if (!property_known(cdw11)) return getenv("SHIM_NODNR") ? 0x0002 : 0x4002;
      fill("regs.bin", &value, (cdw10 & 1) ? 8 : 4, cdw11);
      if (wide) memcpy(c + 72, &value, 8); else memcpy(c + 68, &value, 4);
      return 0;
    }
    if (op == 0x06) snprintf(name, sizeof name, "id-%u.bin", cdw10 & 0xff);
    else if (op == 0x02) {
      unsigned csi = cdw14 >> 24;
      if (csi) snprintf(name, sizeof name, "log-%u-csi%u.bin", cdw10 & 0xff, csi);
      else snprintf(name, sizeof name, "log-%u.bin", cdw10 & 0xff);
      offset = (uint64_t)cdw13 << 32 | cdw12;
    } else snprintf(name, sizeof name, "op-%u.bin", op);
    if (addr && len) fill(name, (void *)(uintptr_t)addr, len, offset);
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
/* libnvme's view of sysfs, for show-regs over PCIe (SHIM_PCI). */
void *nvme_scan_ctrl(void *root, const char *name) {
  void *(*real)(void *, const char *) = dlsym(RTLD_NEXT, "nvme_scan_ctrl");
  if (getenv("SHIM_PCI")) return (void *)fake;
  return real(root, name);
}
const char *nvme_ctrl_get_sysfs_dir(void *c) {
  static char dir[512];
  const char *(*real)(void *) = dlsym(RTLD_NEXT, "nvme_ctrl_get_sysfs_dir");
  if (c != (void *)fake) return real(c);
  snprintf(dir, sizeof dir, "%s/sysfs", getenv("SHIM_DIR"));
  return dir;
}
void nvme_free_ctrl(void *c) {
  void (*real)(void *) = dlsym(RTLD_NEXT, "nvme_free_ctrl");
  if (c != (void *)fake) real(c);
}
