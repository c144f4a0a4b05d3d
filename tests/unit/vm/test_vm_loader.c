/* Unit tests of the coreio-vm ELF64 loader: a good image and every validation failure. */
#include <elf.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "bootinfo.h"
#include "loader.h"

#define RAM_SIZE (4u << 20)

/* An image: the ELF header, two program headers, then the payload. */
struct image {
	Elf64_Ehdr eh;
	Elf64_Phdr ph[2];
	uint8_t payload[64];
};

static uint8_t *ram;
static char err[512];

static int setup(void **state)
{
	(void)state;
	ram = calloc(1, RAM_SIZE);
	return ram ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	free(ram);
	return 0;
}

/* A valid image: text at 1 MiB (payload, filesz 64) and a bss-only segment at 2 MiB. */
static void good_image(struct image *im)
{
	memset(im, 0, sizeof(*im));
	memcpy(im->eh.e_ident, ELFMAG, SELFMAG);
	im->eh.e_ident[EI_CLASS] = ELFCLASS64;
	im->eh.e_ident[EI_DATA] = ELFDATA2LSB;
	im->eh.e_ident[EI_VERSION] = EV_CURRENT;
	im->eh.e_type = ET_EXEC;
	im->eh.e_machine = EM_X86_64;
	im->eh.e_version = EV_CURRENT;
	im->eh.e_entry = 0x100010;
	im->eh.e_phoff = offsetof(struct image, ph);
	im->eh.e_ehsize = sizeof(Elf64_Ehdr);
	im->eh.e_phentsize = sizeof(Elf64_Phdr);
	im->eh.e_phnum = 2;
	im->ph[0].p_type = PT_LOAD;
	im->ph[0].p_offset = offsetof(struct image, payload);
	im->ph[0].p_vaddr = im->ph[0].p_paddr = 0x100000;
	im->ph[0].p_filesz = sizeof(im->payload);
	im->ph[0].p_memsz = 0x1000;
	im->ph[1].p_type = PT_LOAD;
	im->ph[1].p_vaddr = im->ph[1].p_paddr = 0x200000;
	im->ph[1].p_filesz = 0;
	im->ph[1].p_memsz = 0x100;
	memset(im->payload, 0xc3, sizeof(im->payload));
}

static int load(const struct image *im, size_t len, uint64_t *entry)
{
	err[0] = '\0';
	return loader_load_elf(im, len, ram, RAM_SIZE, "g.elf", entry, err, sizeof(err));
}

static void expect_bad(const struct image *im, const char *needle)
{
	uint64_t entry = 0;

	memset(ram + 0x100000, 0x11, 0x2000);
	assert_int_equal(load(im, sizeof(*im), &entry), -EINVAL);
	if (!strstr(err, needle) || !strstr(err, "g.elf"))
		fail_msg("message '%s' lacks '%s' or the file name", err, needle);
	/* Nothing was copied. */
	assert_int_equal(ram[0x100000], 0x11);
}

static void test_good(void **state)
{
	struct image im;
	uint64_t entry = 0;

	(void)state;
	good_image(&im);
	memset(ram + 0x100000, 0x11, 0x2000);
	memset(ram + 0x200000, 0x22, 0x200);
	assert_int_equal(load(&im, sizeof(im), &entry), 0);
	assert_int_equal(entry, 0x100010);
	assert_int_equal(ram[0x100000], 0xc3);
	assert_int_equal(ram[0x100000 + 63], 0xc3);
	assert_int_equal(ram[0x100000 + 64], 0); /* bss cleared */
	assert_int_equal(ram[0x100000 + 0xfff], 0);
	assert_int_equal(ram[0x100000 + 0x1000], 0x11); /* past memsz: untouched */
	assert_int_equal(ram[0x200000], 0);
	assert_int_equal(ram[0x2000ff], 0);
	assert_int_equal(ram[0x200100], 0x22);
}

static void test_bad_header(void **state)
{
	struct image im;
	uint64_t entry;

	(void)state;
	good_image(&im);
	im.eh.e_ident[1] = 'X';
	expect_bad(&im, "magic");
	good_image(&im);
	im.eh.e_ident[EI_CLASS] = ELFCLASS32;
	expect_bad(&im, "64-bit");
	good_image(&im);
	im.eh.e_machine = EM_386;
	expect_bad(&im, "x86-64");
	good_image(&im);
	im.eh.e_type = ET_DYN;
	expect_bad(&im, "ET_EXEC");
	good_image(&im);
	im.eh.e_phoff = 0xfffffffffffffff0ull;
	expect_bad(&im, "program header table");
	good_image(&im);
	im.eh.e_phentsize = 32;
	expect_bad(&im, "program header size");
	good_image(&im);
	im.ph[0].p_type = PT_NOTE;
	im.ph[1].p_type = PT_NULL;
	expect_bad(&im, "PT_LOAD");
	good_image(&im);
	im.eh.e_entry = 0x300000;
	expect_bad(&im, "entry");
	/* Too short for a header at all. */
	good_image(&im);
	assert_int_equal(load(&im, 10, &entry), -EINVAL);
	assert_non_null(strstr(err, "too short"));
}

static void test_bad_segments(void **state)
{
	struct image im;

	(void)state;
	good_image(&im);
	im.ph[0].p_paddr = 0xff000; /* below 1 MiB */
	expect_bad(&im, "segment 0 at 0xff000");
	good_image(&im);
	im.ph[1].p_paddr = RAM_SIZE - 0x80; /* memsz 0x100 passes the end of RAM */
	expect_bad(&im, "segment 1");
	good_image(&im);
	im.ph[1].p_paddr = RAM_SIZE; /* starts at the end of RAM */
	expect_bad(&im, "does not fit in RAM");
	good_image(&im);
	im.ph[0].p_filesz = 0x2000; /* filesz > memsz */
	expect_bad(&im, "p_filesz");
	good_image(&im);
	im.ph[0].p_offset = sizeof(im) - 8; /* file part beyond the file */
	expect_bad(&im, "outside the file");
	good_image(&im);
	im.ph[0].p_offset = 0xffffffffffffffc0ull; /* offset + filesz wraps */
	expect_bad(&im, "outside the file");
	good_image(&im);
	im.ph[1].p_paddr = 0x200000;
	im.ph[1].p_memsz = 0xffffffffffe00100ull; /* paddr + memsz wraps past 2^64 */
	expect_bad(&im, "segment 1");
}

static void test_file(void **state)
{
	uint64_t entry;

	(void)state;
	assert_true(loader_load_file("/nonexistent/guest.elf", ram, RAM_SIZE, &entry, err,
				     sizeof(err)) < 0);
	assert_non_null(strstr(err, "/nonexistent/guest.elf"));
	assert_true(loader_load_file("/dev/null", ram, RAM_SIZE, &entry, err, sizeof(err)) < 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_good),
	    cmocka_unit_test(test_bad_header),
	    cmocka_unit_test(test_bad_segments),
	    cmocka_unit_test(test_file),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
