/* Register map of coreio-timerdma, shared by the device model and the test guests that drive it. */
#ifndef COREIO_TIMERDMA_REGS_H
#define COREIO_TIMERDMA_REGS_H

/* Register offsets from the start of the range (examples/timerdma/README.md). */
#define TD_ID	     0x00
#define TD_CTRL	     0x04
#define TD_PERIOD_US 0x08
#define TD_STATUS    0x0c
#define TD_TICKS     0x10
#define TD_DMA_SRC   0x18
#define TD_DMA_DST   0x20
#define TD_DMA_LEN   0x28
#define TD_DMA_CMD   0x2c
#define TD_DMA_BUSY  0x30
#define TD_REGS_SIZE 0x40

#define TD_ID_VALUE	   0x434f5254u /* "CORT" as a hex word */
#define TD_CTRL_TIMER_EN   1u
#define TD_CTRL_IRQ_EN	   2u
#define TD_STATUS_TIMER	   1u
#define TD_STATUS_DMA_DONE 2u
#define TD_STATUS_DMA_ERR  4u
#define TD_CMD_COPY	   1u
#define TD_CMD_FILL	   2u
#define TD_DMA_MAX	   (16u << 20)

#endif
