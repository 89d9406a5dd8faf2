/* The syscall numbers netkit's programs look for at the raw sys_enter/sys_exit tracepoints, and
 * how to read the number back at sys_exit. There are no kernel headers here, so each
 * architecture spells them out in its own header. */
#ifndef NETKIT_SYSCALLS_H
#define NETKIT_SYSCALLS_H

#if defined(__TARGET_ARCH_x86)
#include "syscalls_x86.h"
#elif defined(__TARGET_ARCH_arm64)
#include "syscalls_arm64.h"
#else
#error "netkit: add a syscalls_<arch>.h for this architecture"
#endif

#endif
