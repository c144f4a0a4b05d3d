/* coreio-vm: the ELF64 loader of the KVM accelerator (--kernel). */
#ifndef COREIO_VM_LOADER_H
#define COREIO_VM_LOADER_H

#include <stddef.h>
#include <stdint.h>

#define LOADER_MAX_FILE (1ull << 30) /* largest guest file read */

/*
 * Validate the ELF64 image img[0..len) and copy its PT_LOAD segments into
 * RAM ram[0..ram_size) (ram = guest-physical 0); the bss part of each
 * segment (p_memsz beyond p_filesz) is cleared.
 *   name   the file name used in messages.
 *   entry  receives e_entry.
 *   err    receives a message naming the file and the bad header field or
 *          segment.
 * Checks: the ELF magic, 64-bit class, little-endian, version 1, type
 * ET_EXEC, machine x86-64, the program header table inside the file, at
 * least one PT_LOAD; for each PT_LOAD: p_filesz <= p_memsz, the file part
 * inside the file, and [p_paddr, p_paddr + p_memsz) inside RAM and at or
 * above COREIO_BOOT_LOAD_MIN (overflow-safe); the entry inside a PT_LOAD.
 * Nothing is copied unless every check passes.
 * Returns 0 or -EINVAL (bad image; err says why).
 */
int loader_load_elf(const void *img, size_t len, uint8_t *ram, uint64_t ram_size, const char *name,
		    uint64_t *entry, char *err, size_t errlen);

/*
 * Read the file path (at most LOADER_MAX_FILE bytes) and load it with
 * loader_load_elf().
 * Returns 0, -EINVAL for a bad image, or a negative errno when the file
 * cannot be read; err says why in every case.
 */
int loader_load_file(const char *path, uint8_t *ram, uint64_t ram_size, uint64_t *entry, char *err,
		     size_t errlen);

#endif
