/* coreio-vm: the ELF64 loader of the KVM accelerator (--kernel). */
#include "loader.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bootinfo.h"

static int bad(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int bad(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

/* True if [off, off + n) lies inside [0, total), overflow-safe. */
static bool inside(uint64_t off, uint64_t n, uint64_t total)
{
	return off <= total && n <= total - off;
}

static int check_header(const Elf64_Ehdr *eh, size_t len, const char *name, char *err,
			size_t errlen)
{
	if (memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0)
		return bad(err, errlen, "%s: not an ELF file (bad magic)", name);
	if (eh->e_ident[EI_CLASS] != ELFCLASS64)
		return bad(err, errlen, "%s: not a 64-bit ELF file (class %u)", name,
			   eh->e_ident[EI_CLASS]);
	if (eh->e_ident[EI_DATA] != ELFDATA2LSB)
		return bad(err, errlen, "%s: not a little-endian ELF file", name);
	if (eh->e_ident[EI_VERSION] != EV_CURRENT || eh->e_version != EV_CURRENT)
		return bad(err, errlen, "%s: unknown ELF version", name);
	if (eh->e_machine != EM_X86_64)
		return bad(err, errlen, "%s: ELF machine %u is not x86-64 (%u)", name,
			   eh->e_machine, EM_X86_64);
	if (eh->e_type != ET_EXEC)
		return bad(err, errlen,
			   "%s: ELF type %u is not ET_EXEC (link a static executable at a fixed "
			   "address, e.g. ld -Ttext 0x100000)",
			   name, eh->e_type);
	if (eh->e_phnum == 0)
		return bad(err, errlen, "%s: no program headers", name);
	if (eh->e_phentsize != sizeof(Elf64_Phdr))
		return bad(err, errlen, "%s: program header size %u, expected %zu", name,
			   eh->e_phentsize, sizeof(Elf64_Phdr));
	if (!inside(eh->e_phoff, (uint64_t)eh->e_phnum * sizeof(Elf64_Phdr), len))
		return bad(err, errlen, "%s: the program header table lies outside the file", name);
	return 0;
}

static int check_segment(const Elf64_Phdr *ph, unsigned i, size_t len, uint64_t ram_size,
			 const char *name, char *err, size_t errlen)
{
	if (ph->p_filesz > ph->p_memsz)
		return bad(err, errlen,
			   "%s: segment %u: p_filesz 0x%llx is larger than p_memsz 0x%llx", name, i,
			   (unsigned long long)ph->p_filesz, (unsigned long long)ph->p_memsz);
	if (!inside(ph->p_offset, ph->p_filesz, len))
		return bad(err, errlen,
			   "%s: segment %u: file bytes [0x%llx, +0x%llx) lie outside the file "
			   "(%zu bytes)",
			   name, i, (unsigned long long)ph->p_offset,
			   (unsigned long long)ph->p_filesz, len);
	if (ph->p_paddr < COREIO_BOOT_LOAD_MIN)
		return bad(err, errlen,
			   "%s: segment %u at 0x%llx lies below 0x%llx (1 MiB), where the VMM "
			   "keeps page tables, boot info and stacks (link with ld -n, or a linker "
			   "script, so that no segment lies below 1 MiB)",
			   name, i, (unsigned long long)ph->p_paddr,
			   (unsigned long long)COREIO_BOOT_LOAD_MIN);
	if (!inside(ph->p_paddr, ph->p_memsz, ram_size))
		return bad(err, errlen,
			   "%s: segment %u [0x%llx, +0x%llx) does not fit in RAM (0x%llx bytes; "
			   "raise --mem)",
			   name, i, (unsigned long long)ph->p_paddr,
			   (unsigned long long)ph->p_memsz, (unsigned long long)ram_size);
	return 0;
}

int loader_load_elf(const void *img, size_t len, uint8_t *ram, uint64_t ram_size, const char *name,
		    uint64_t *entry, char *err, size_t errlen)
{
	const uint8_t *p = img;
	Elf64_Ehdr eh;
	unsigned nload = 0;
	bool entry_ok = false;
	int rc;

	if (len < sizeof(eh))
		return bad(err, errlen, "%s: too short for an ELF header (%zu bytes)", name, len);
	memcpy(&eh, p, sizeof(eh));
	rc = check_header(&eh, len, name, err, errlen);
	if (rc < 0)
		return rc;
	/* Validate every segment before copying any. */
	for (unsigned i = 0; i < eh.e_phnum; i++) {
		Elf64_Phdr ph;

		memcpy(&ph, p + eh.e_phoff + (uint64_t)i * sizeof(ph), sizeof(ph));
		if (ph.p_type != PT_LOAD)
			continue;
		rc = check_segment(&ph, i, len, ram_size, name, err, errlen);
		if (rc < 0)
			return rc;
		nload++;
		if (eh.e_entry >= ph.p_vaddr && eh.e_entry - ph.p_vaddr < ph.p_memsz)
			entry_ok = true;
	}
	if (nload == 0)
		return bad(err, errlen, "%s: no PT_LOAD segment", name);
	if (!entry_ok)
		return bad(err, errlen,
			   "%s: the entry point 0x%llx is not inside a PT_LOAD segment", name,
			   (unsigned long long)eh.e_entry);
	for (unsigned i = 0; i < eh.e_phnum; i++) {
		Elf64_Phdr ph;

		memcpy(&ph, p + eh.e_phoff + (uint64_t)i * sizeof(ph), sizeof(ph));
		if (ph.p_type != PT_LOAD)
			continue;
		memcpy(ram + ph.p_paddr, p + ph.p_offset, (size_t)ph.p_filesz);
		memset(ram + ph.p_paddr + ph.p_filesz, 0, (size_t)(ph.p_memsz - ph.p_filesz));
	}
	*entry = eh.e_entry;
	return 0;
}

int loader_load_file(const char *path, uint8_t *ram, uint64_t ram_size, uint64_t *entry, char *err,
		     size_t errlen)
{
	struct stat st;
	uint8_t *buf;
	size_t got = 0;
	int fd, rc;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return rc;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size <= 0 ||
	    (uint64_t)st.st_size > LOADER_MAX_FILE) {
		snprintf(err, errlen, "%s: not a regular file of 1 byte to 1 GiB", path);
		close(fd);
		return -EINVAL;
	}
	buf = malloc((size_t)st.st_size);
	if (!buf) {
		snprintf(err, errlen, "%s: out of memory", path);
		close(fd);
		return -ENOMEM;
	}
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			rc = n < 0 ? -errno : -EIO;
			snprintf(err, errlen, "%s: read failed: %s", path,
				 n < 0 ? strerror(errno) : "file shrank");
			free(buf);
			close(fd);
			return rc;
		}
		got += (size_t)n;
	}
	close(fd);
	rc = loader_load_elf(buf, got, ram, ram_size, path, entry, err, errlen);
	free(buf);
	return rc;
}
