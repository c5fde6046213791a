package abi

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"unsafe"
)

// wire pairs every wire struct with its kernel name and the size the 7.45
// header gives it (the Size* constants).
var wire = []struct {
	c    string
	v    any
	size int
}{
	{"fuse_in_header", InHeader{}, SizeInHeader},
	{"fuse_out_header", OutHeader{}, SizeOutHeader},
	{"fuse_attr", Attr{}, SizeAttr},
	{"fuse_statx", Statx{}, SizeStatx},
	{"fuse_kstatfs", Kstatfs{}, SizeKstatfs},
	{"fuse_file_lock", FileLock{}, SizeFileLock},
	{"fuse_entry_out", EntryOut{}, SizeEntryOut},
	{"fuse_forget_in", ForgetIn{}, SizeForgetIn},
	{"fuse_forget_one", ForgetOne{}, SizeForgetOne},
	{"fuse_batch_forget_in", BatchForgetIn{}, SizeBatchForgetIn},
	{"fuse_getattr_in", GetattrIn{}, SizeGetattrIn},
	{"fuse_attr_out", AttrOut{}, SizeAttrOut},
	{"fuse_statx_in", StatxIn{}, SizeStatxIn},
	{"fuse_statx_out", StatxOut{}, SizeStatxOut},
	{"fuse_mknod_in", MknodIn{}, SizeMknodIn},
	{"fuse_mkdir_in", MkdirIn{}, SizeMkdirIn},
	{"fuse_rename_in", RenameIn{}, SizeRenameIn},
	{"fuse_rename2_in", Rename2In{}, SizeRename2In},
	{"fuse_link_in", LinkIn{}, SizeLinkIn},
	{"fuse_setattr_in", SetattrIn{}, SizeSetattrIn},
	{"fuse_open_in", OpenIn{}, SizeOpenIn},
	{"fuse_create_in", CreateIn{}, SizeCreateIn},
	{"fuse_open_out", OpenOut{}, SizeOpenOut},
	{"fuse_release_in", ReleaseIn{}, SizeReleaseIn},
	{"fuse_flush_in", FlushIn{}, SizeFlushIn},
	{"fuse_read_in", ReadIn{}, SizeReadIn},
	{"fuse_write_in", WriteIn{}, SizeWriteIn},
	{"fuse_write_out", WriteOut{}, SizeWriteOut},
	{"fuse_statfs_out", StatfsOut{}, SizeStatfsOut},
	{"fuse_fsync_in", FsyncIn{}, SizeFsyncIn},
	{"fuse_setxattr_in", SetxattrIn{}, SizeSetxattrIn},
	{"fuse_getxattr_in", GetxattrIn{}, SizeGetxattrIn},
	{"fuse_getxattr_out", GetxattrOut{}, SizeGetxattrOut},
	{"fuse_lk_in", LkIn{}, SizeLkIn},
	{"fuse_lk_out", LkOut{}, SizeLkOut},
	{"fuse_access_in", AccessIn{}, SizeAccessIn},
	{"fuse_init_in", InitIn{}, SizeInitIn},
	{"fuse_init_out", InitOut{}, SizeInitOut},
	{"cuse_init_in", CuseInitIn{}, SizeCuseInitIn},
	{"cuse_init_out", CuseInitOut{}, SizeCuseInitOut},
	{"fuse_interrupt_in", InterruptIn{}, SizeInterruptIn},
	{"fuse_bmap_in", BmapIn{}, SizeBmapIn},
	{"fuse_bmap_out", BmapOut{}, SizeBmapOut},
	{"fuse_ioctl_in", IoctlIn{}, SizeIoctlIn},
	{"fuse_ioctl_iovec", IoctlIovec{}, SizeIoctlIovec},
	{"fuse_ioctl_out", IoctlOut{}, SizeIoctlOut},
	{"fuse_poll_in", PollIn{}, SizePollIn},
	{"fuse_poll_out", PollOut{}, SizePollOut},
	{"fuse_notify_poll_wakeup_out", NotifyPollWakeupOut{}, SizeNotifyPollWakeupOut},
	{"fuse_fallocate_in", FallocateIn{}, SizeFallocateIn},
	{"fuse_dirent", Dirent{}, SizeDirent},
	{"fuse_direntplus", Direntplus{}, SizeDirentplus},
	{"fuse_notify_inval_inode_out", NotifyInvalInodeOut{}, SizeNotifyInvalInodeOut},
	{"fuse_notify_inval_entry_out", NotifyInvalEntryOut{}, SizeNotifyInvalEntryOut},
	{"fuse_notify_delete_out", NotifyDeleteOut{}, SizeNotifyDeleteOut},
	{"fuse_notify_store_out", NotifyStoreOut{}, SizeNotifyStoreOut},
	{"fuse_notify_retrieve_out", NotifyRetrieveOut{}, SizeNotifyRetrieveOut},
	{"fuse_notify_retrieve_in", NotifyRetrieveIn{}, SizeNotifyRetrieveIn},
	{"fuse_notify_prune_out", NotifyPruneOut{}, SizeNotifyPruneOut},
	{"fuse_backing_map", BackingMap{}, SizeBackingMap},
	{"fuse_lseek_in", LseekIn{}, SizeLseekIn},
	{"fuse_lseek_out", LseekOut{}, SizeLseekOut},
	{"fuse_copy_file_range_in", CopyFileRangeIn{}, SizeCopyFileRangeIn},
	{"fuse_copy_file_range_out", CopyFileRangeOut{}, SizeCopyFileRangeOut},
	{"fuse_setupmapping_in", SetupmappingIn{}, SizeSetupmappingIn},
	{"fuse_removemapping_in", RemovemappingIn{}, SizeRemovemappingIn},
	{"fuse_removemapping_one", RemovemappingOne{}, SizeRemovemappingOne},
	{"fuse_syncfs_in", SyncfsIn{}, SizeSyncfsIn},
	{"fuse_ext_header", ExtHeader{}, SizeExtHeader},
	{"fuse_supp_groups", SuppGroups{}, SizeSuppGroups},
	{"fuse_uring_ent_in_out", UringEntInOut{}, SizeUringEntInOut},
	{"fuse_uring_req_header", UringReqHeader{}, SizeUringReqHeader},
	{"fuse_uring_cmd_req", UringCmdReq{}, SizeUringCmdReq},
}

// TestSizes checks every Go struct against the size the 7.45 kernel header
// gives it, and that no struct has implicit padding (Go would insert it where
// the C compiler does, but explicit fields keep the layout obvious).
func TestSizes(t *testing.T) {
	for _, w := range wire {
		typ := reflect.TypeOf(w.v)
		if got := int(typ.Size()); got != w.size {
			t.Errorf("%s (%s): Go size %d, kernel size %d", w.c, typ.Name(), got, w.size)
		}
		sum := 0
		for i := 0; i < typ.NumField(); i++ {
			sum += int(typ.Field(i).Type.Size())
		}
		if sum != w.size {
			t.Errorf("%s: fields add up to %d bytes, struct is %d: implicit padding", w.c, sum, w.size)
		}
	}
	// The numbers the architecture notes insist on.
	for name, pair := range map[string][2]int{
		"InHeader": {SizeInHeader, 40}, "OutHeader": {SizeOutHeader, 16}, "InitIn": {SizeInitIn, 64},
		"InitOut": {SizeInitOut, 64}, "Attr": {SizeAttr, 88}, "EntryOut": {SizeEntryOut, 128},
		"OpenOut": {SizeOpenOut, 16}, "BackingMap": {SizeBackingMap, 16},
		"CuseInitIn": {SizeCuseInitIn, 16}, "CuseInitOut": {SizeCuseInitOut, 72},
	} {
		if pair[0] != pair[1] {
			t.Errorf("%s: constant %d, header says %d", name, pair[0], pair[1])
		}
	}
}

// TestOffsets pins fields whose position older or newer layouts depend on.
func TestOffsets(t *testing.T) {
	checks := []struct {
		name      string
		got, want uintptr
	}{
		{"in_header.total_extlen", unsafe.Offsetof(InHeader{}.TotalExtlen), 36},
		{"init_in.flags2", unsafe.Offsetof(InitIn{}.Flags2), 16},
		{"init_out.max_write", unsafe.Offsetof(InitOut{}.MaxWrite), 20},
		{"init_out.max_pages", unsafe.Offsetof(InitOut{}.MaxPages), 28},
		{"init_out.flags2", unsafe.Offsetof(InitOut{}.Flags2), 32},
		{"init_out.max_stack_depth", unsafe.Offsetof(InitOut{}.MaxStackDepth), 36},
		{"init_out.request_timeout", unsafe.Offsetof(InitOut{}.RequestTimeout), 40},
		{"open_out.backing_id", unsafe.Offsetof(OpenOut{}.BackingID), 12},
		{"entry_out.attr", unsafe.Offsetof(EntryOut{}.Attr), 40},
		{"attr_out.attr", unsafe.Offsetof(AttrOut{}.Attr), 16},
		{"statx.mode", unsafe.Offsetof(Statx{}.Mode), 28},
		{"statx.ino", unsafe.Offsetof(Statx{}.Ino), 32},
		{"statx.atime", unsafe.Offsetof(Statx{}.Atime), 64},
		{"statx.rdev_major", unsafe.Offsetof(Statx{}.RdevMajor), 128},
		{"setattr_in.mode", unsafe.Offsetof(SetattrIn{}.Mode), 68},
		{"cuse_init_out.dev_major", unsafe.Offsetof(CuseInitOut{}.DevMajor), 24},
		{"direntplus.dirent", unsafe.Offsetof(Direntplus{}.Dirent), 128},
		{"lk_in.lk_flags", unsafe.Offsetof(LkIn{}.LkFlags), 40},
		{"write_in.flags", unsafe.Offsetof(WriteIn{}.Flags), 32},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("offset of %s: %d, want %d", c.name, c.got, c.want)
		}
	}
}

// TestAgainstInstalledHeader compiles the machine's own <linux/fuse.h> (from
// linux-libc-dev) and compares the size of every struct it declares with the
// Go type. It covers the structs of the installed header's protocol version;
// newer ones are pinned by TestSizes.
func TestAgainstInstalledHeader(t *testing.T) {
	const header = "/usr/include/linux/fuse.h"
	src, err := os.ReadFile(header)
	if err != nil {
		t.Skipf("no kernel header to compare with (%v); install linux-libc-dev", err)
	}
	cc, err := exec.LookPath("cc")
	if err != nil {
		t.Skip("no C compiler to read the kernel header's layout; install gcc")
	}
	var prog strings.Builder
	prog.WriteString("#include <stdio.h>\n#include <linux/fuse.h>\nint main(void){\n")
	var names []string
	for _, w := range wire {
		if bytes.Contains(src, []byte("struct "+w.c+" {")) {
			names = append(names, w.c)
			prog.WriteString(`printf("%zu\n", sizeof(struct ` + w.c + "));\n")
		}
	}
	prog.WriteString("return 0;}\n")
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "sz.c"), []byte(prog.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "sz")
	if out, err := exec.Command(cc, "-o", bin, filepath.Join(dir, "sz.c")).CombinedOutput(); err != nil {
		t.Fatalf("compiling against %s: %v\n%s", header, err, out)
	}
	out, err := exec.Command(bin).Output()
	if err != nil {
		t.Fatal(err)
	}
	sizes := strings.Fields(string(out))
	if len(sizes) != len(names) || len(names) < 50 {
		t.Fatalf("read %d sizes for %d structs", len(sizes), len(names))
	}
	byName := map[string]any{}
	for _, w := range wire {
		byName[w.c] = w.v
	}
	for i, n := range names {
		want, _ := strconv.Atoi(sizes[i])
		if got := int(reflect.TypeOf(byName[n]).Size()); got != want {
			t.Errorf("struct %s: Go %d bytes, %s %d bytes", n, got, header, want)
		}
	}
	t.Logf("checked %d structs against %s", len(names), header)
}

func TestIoctlNumbers(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want uint32
	}{
		{"CLONE", DevIocClone, 0x8004e500},
		{"BACKING_OPEN", DevIocBackingOpen, 0x4010e501},
		{"BACKING_CLOSE", DevIocBackingClose, 0x4004e502},
		{"SYNC_INIT", DevIocSyncInit, 0xe503},
	} {
		if c.got != c.want {
			t.Errorf("FUSE_DEV_IOC_%s = %#x, want %#x", c.name, c.got, c.want)
		}
	}
}

func TestOpcodeNames(t *testing.T) {
	n := 0
	for o := Opcode(0); o <= OpMax+1; o++ {
		if o.Valid() {
			n++
			if strings.HasPrefix(o.String(), "OPCODE(") {
				t.Errorf("opcode %d valid but unnamed", o)
			}
		}
	}
	if n != 51 { // 1..53 without 7 and 19 (FSYNC is 20)
		t.Errorf("%d valid FUSE opcodes, want 51", n)
	}
	for o, want := range map[Opcode]string{7: "OPCODE(7)", 54: "OPCODE(54)", OpCuseInit: "CUSE_INIT", OpStatx: "STATX"} {
		if o.String() != want {
			t.Errorf("Opcode(%d).String() = %q, want %q", uint32(o), o.String(), want)
		}
	}
	if !OpForget.NoReply() || !OpBatchForget.NoReply() || OpLookup.NoReply() {
		t.Error("NoReply wrong")
	}
	if NotifyPrune.String() != "PRUNE" || NotifyCode(10).String() != "NOTIFY(10)" {
		t.Error("notify names wrong")
	}
}

func TestInitFlags(t *testing.T) {
	f := MakeInitFlags(uint32(InitAsyncRead|InitExt), uint32(InitPassthrough>>32))
	if !f.Has(InitPassthrough) || !f.Has(InitAsyncRead|InitExt) || f.Has(InitHasResend) {
		t.Fatalf("flags %v", f)
	}
	lo, hi := f.Words()
	if lo != 1|1<<30 || hi != 1<<5 {
		t.Errorf("Words() = %#x, %#x", lo, hi)
	}
	if s := f.String(); s != "ASYNC_READ|INIT_EXT|PASSTHROUGH" {
		t.Errorf("String() = %q", s)
	}
	if s := (InitFlags(1) << 50).String(); s != "BIT(50)" {
		t.Errorf("unknown bit prints %q", s)
	}
	if InitKnown != 1<<43-1 {
		t.Errorf("InitKnown = %#x", uint64(InitKnown))
	}
}

func TestDecode(t *testing.T) {
	var in InitIn
	if err := Decode(make([]byte, 63), &in); !errors.Is(err, ErrShort) {
		t.Fatalf("short decode: %v", err)
	}
	b := make([]byte, 64)
	b[0], b[4], b[16] = 7, 45, 0x20
	if err := Decode(b, &in); err != nil || in.Major != 7 || in.Minor != 45 || in.Flags2 != 0x20 {
		t.Fatalf("decode: %v %+v", err, in)
	}
	// An older kernel's 16-byte InitIn: the tail must come out zero even
	// when the destination held something.
	in.Flags2 = 99
	if err := DecodeSized(b[:CompatInitInSize], CompatInitInSize, &in); err != nil || in.Flags2 != 0 || in.Minor != 45 {
		t.Fatalf("DecodeSized: %v %+v", err, in)
	}
	if err := DecodeSized(b[:8], CompatInitInSize, &in); !errors.Is(err, ErrShort) {
		t.Fatalf("DecodeSized short: %v", err)
	}
	out := InitOut{Major: 7, Minor: 45}
	if raw := Bytes(&out); len(raw) != SizeInitOut || raw[4] != 45 {
		t.Fatalf("Bytes: %v", raw)
	}
}

func TestNames(t *testing.T) {
	for _, c := range []struct {
		in   string
		name string
		rest string
		err  error
	}{
		{"abc\x00def", "abc", "def", nil},
		{"abc", "", "", ErrNoNUL},
		{"\x00", "", "", ErrEmptyName},
		{strings.Repeat("a", NameMax) + "\x00", strings.Repeat("a", NameMax), "", nil},
		{strings.Repeat("a", NameMax+1) + "\x00", "", "", ErrNameTooLong},
		{strings.Repeat("a", NameMax+5), "", "", ErrNameTooLong},
	} {
		name, rest, err := Name([]byte(c.in))
		if !errors.Is(err, c.err) || name != c.name || string(rest) != c.rest {
			t.Errorf("Name(%.20q) = %.20q, %q, %v", c.in, name, rest, err)
		}
	}
	if DirentSize(1) != 32 || DirentSize(8) != 32 || DirentSize(9) != 40 || DirentplusSize(1) != 160 {
		t.Error("dirent sizes wrong")
	}
}

func FuzzName(f *testing.F) {
	f.Add([]byte("name\x00rest"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		name, rest, err := Name(b)
		if err != nil {
			return
		}
		if len(name) == 0 || len(name) > NameMax || len(name)+1+len(rest) != len(b) {
			t.Fatalf("Name(%q) = %q, %q", b, name, rest)
		}
	})
}
