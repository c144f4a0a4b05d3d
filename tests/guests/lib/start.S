/* Test-guest runtime in assembly: the entry point, interrupt stubs and the drop to CPL 3. */

	.code64
	.section .text.start, "ax"

/*
 * _start: every vCPU starts here in 64-bit mode at CPL 0 with interrupts
 * off, RDI = vCPU index, RSI = boot info, RSP = its boot stack
 * (docs/guests.md). rt_entry() never returns.
 */
	.globl _start
	.type _start, @function
_start:
	cld
	andq	$-16, %rsp
	xorl	%ebp, %ebp
	call	rt_entry
1:	pause
	jmp	1b
	.size _start, . - _start

/*
 * One 16-byte stub per vector 0..255 at rt_isr_base + vector * 16. Vectors
 * that push no error code push a zero so every frame looks the same.
 */
	.text
	.p2align 4
	.globl rt_isr_base
rt_isr_base:
	.set	vec, 0
	.rept	256
	.p2align 4
	.if	(vec == 8) | (vec == 10) | (vec == 11) | (vec == 12) | (vec == 13) | (vec == 14) | (vec == 17) | (vec == 21) | (vec == 29) | (vec == 30)
	.else
	pushq	$0
	.endif
	pushq	$vec
	jmp	rt_isr_common
	.set	vec, vec + 1
	.endr

/* Save the general registers (struct rt_frame), call rt_trap(frame), return. */
rt_isr_common:
	cld
	pushq	%rax
	pushq	%rbx
	pushq	%rcx
	pushq	%rdx
	pushq	%rsi
	pushq	%rdi
	pushq	%rbp
	pushq	%r8
	pushq	%r9
	pushq	%r10
	pushq	%r11
	pushq	%r12
	pushq	%r13
	pushq	%r14
	pushq	%r15
	movq	%rsp, %rdi
	call	rt_trap
	popq	%r15
	popq	%r14
	popq	%r13
	popq	%r12
	popq	%r11
	popq	%r10
	popq	%r9
	popq	%r8
	popq	%rbp
	popq	%rdi
	popq	%rsi
	popq	%rdx
	popq	%rcx
	popq	%rbx
	popq	%rax
	addq	$16, %rsp
	iretq

/*
 * rt_enter_user(rip, arg, rsp, rflags): iretq to CPL 3 at rip with RDI = arg
 * on the stack rsp (whose top word is the return address rt_user_return).
 */
	.globl rt_enter_user
	.type rt_enter_user, @function
rt_enter_user:
	movl	$0x1b, %eax
	movw	%ax, %ds
	movw	%ax, %es
	pushq	$0x1b
	pushq	%rdx
	pushq	%rcx
	pushq	$0x23
	pushq	%rdi
	movq	%rsi, %rdi
	xorl	%eax, %eax
	xorl	%ebx, %ebx
	xorl	%ecx, %ecx
	xorl	%edx, %edx
	xorl	%esi, %esi
	xorl	%ebp, %ebp
	xorl	%r8d, %r8d
	xorl	%r9d, %r9d
	xorl	%r10d, %r10d
	xorl	%r11d, %r11d
	iretq
	.size rt_enter_user, . - rt_enter_user

/* A user function returned (at CPL 3): rt_user_exit(its value). */
	.globl rt_user_return
	.type rt_user_return, @function
rt_user_return:
	movl	%eax, %edi
	call	rt_user_exit
1:	pause
	jmp	1b
	.size rt_user_return, . - rt_user_return

	.section .note.GNU-stack, "", @progbits
