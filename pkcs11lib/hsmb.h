// Shared by entry.c and the cgo preamble of export.go.
#ifndef HSMB_H
#define HSMB_H
#include <stddef.h>
#include <p11-kit/pkcs11.h>

void hsmb_put_ulong(void *p, CK_ULONG v);
CK_ULONG hsmb_get_ulong(const void *p);
void hsmb_get_attr(const CK_ATTRIBUTE *t, CK_ULONG i, CK_ATTRIBUTE *out);
void hsmb_set_attr_len(CK_ATTRIBUTE *t, CK_ULONG i, CK_ULONG len);
#endif
