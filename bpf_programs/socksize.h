/* socksize's histogram kinds (struct proc_hist_key's kind); netkit reads the names from the
 * object's BTF. */
#ifndef SOCKSIZE_H
#define SOCKSIZE_H

enum socksize_kind {
	SIZE_READ = 0,
	SIZE_WRITE = 1,
};

#endif
