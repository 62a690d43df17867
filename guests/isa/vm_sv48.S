/* Sv48 paging: the vm_sv39 checks with four levels (vm_body.h), plus a 512 GiB terapage, and an address above Sv39's reach that is canonical in Sv48. */
#define LEVELS 4
#define SATP_MODE SATP_SV48
#define VA_BITS 48
#define V_TERA 0x10000000000          /* 1 TiB: a 512 GiB page -> physical 0 */
#include "vm_body.h"
