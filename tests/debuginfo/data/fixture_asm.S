/* A function without a DWARF subprogram: its source line comes from the
 * line program at its address. */
	.text
	.globl kp_asm
	.type kp_asm, @function
kp_asm:
	movl %edi, %eax
	ret
	.size kp_asm, .-kp_asm
	.section .note.GNU-stack,"",@progbits
