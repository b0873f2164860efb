# The boot sector of tests/interop_vfio_user/test_seabios_boot.py (GNU as, 16-bit real mode):
#   as --32 -o boot.o bootsector.S && objcopy -O binary -j .text boot.o bootsector.bin
# It prints to SeaBIOS's debug port (0x402), reads LBA 1-2 and writes itself to LBA 3 through
# INT 13h (SeaBIOS's NVMe driver underneath), and ends QEMU through isa-debug-exit (0xf4):
# 0x10 when every call succeeded, 0x11 when one failed.
.code16
.globl _start
_start:
    cli
    xor %ax, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov $0x7c00, %sp
    sti
    mov $0x7c00 + (hello - _start), %si
    call print
    mov $0x7c00 + (dap - _start), %si
    mov $0x42, %ah
    int $0x13
    jc fail
    mov $0x8000, %si
    call print
    mov $0x8200, %si
    call print
    mov $0x7c00 + (dap_write - _start), %si
    mov $0x4300, %ax
    int $0x13
    jc fail
    mov $0x7c00 + (wrote - _start), %si
    call print
    mov $0x10, %al
    jmp done
fail:
    mov $0x7c00 + (failed - _start), %si
    call print
    mov $0x11, %al
done:
    out %al, $0xf4
1:  cli
    hlt
    jmp 1b
print:
    push %dx
    mov $0x402, %dx
2:  lodsb
    test %al, %al
    jz 3f
    out %al, %dx
    jmp 2b
3:  pop %dx
    ret
dap:
    .byte 0x10, 0
    .word 2
    .word 0x8000, 0
    .quad 1
dap_write:
    .byte 0x10, 0
    .word 1
    .word 0x7c00, 0
    .quad 3
hello:
    .asciz "nvmestack-boot: sector 0 running\n"
wrote:
    .asciz "nvmestack-boot: sector 0 written to LBA 3\n"
failed:
    .asciz "nvmestack-boot: INT 13h failed\n"
    .org 510
    .byte 0x55, 0xaa
