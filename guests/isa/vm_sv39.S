/* Sv39 paging from S- and U-mode: 4 KiB pages, 2 MiB and 1 GiB superpages, invalid PTEs, R/W/X permissions (W without R reserved), MXR, the U bit and SUM, A/D
 * set by hardware, non-canonical addresses, SFENCE.VMA, a fetch straddling into an unmapped page.
 * The body is vm_body.h, shared with vm_sv48. */
#define LEVELS 3
#define SATP_MODE SATP_SV39
#define VA_BITS 39
#include "vm_body.h"
