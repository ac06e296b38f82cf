"""lleaves 1.3.0 against llvmlite ≥ 0.45 (the lock has 0.50): llvmlite removed the legacy pass manager
(``PassManagerBuilder``) and made ``llvm.initialize()`` raise, so ``lleaves.Model.compile()`` fails with
``AttributeError: module 'llvmlite.binding' has no attribute 'PassManagerBuilder'`` (lleaves issue #95, open).

``patch_lleaves()`` swaps, in this process only, lleaves' optimiser step for the same O3 pipeline built with the
new pass manager (``PassBuilder`` + ``PipelineTuningOptions``) and drops the ``initialize()`` call. The generated
IR and the code generation are lleaves' own; the bench checks the compiled scores against LightGBM anyway.
"""

from __future__ import annotations

import os
from typing import Any

import llvmlite.binding as llvm


def lleaves_needs_patch() -> bool:
    return not hasattr(llvm, "PassManagerBuilder")


def _initialize_llvm() -> None:
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()


def _compile_to_module(
    file_path: Any,
    fblocksize: int = 34,
    finline: bool = True,
    raw_score: bool = False,
    froot_func_name: str = "forest_root",
    use_fp64: bool = True,
) -> Any:
    import llvmlite.ir
    from lleaves.compiler.ast import parse_to_ast
    from lleaves.compiler.codegen import gen_forest
    from lleaves.llvm_binding import _get_target_machine

    forest = parse_to_ast(file_path)
    forest.raw_score = raw_score
    ir = llvmlite.ir.Module(name="forest")
    gen_forest(forest, ir, fblocksize, froot_func_name, use_fp64)
    ir.triple = llvm.get_process_triple()
    module = llvm.parse_assembly(str(ir))
    module.name = str(file_path)
    module.verify()
    _initialize_llvm()
    target_machine = _get_target_machine()  # the host CPU, as lleaves' code generation uses
    options = llvm.PipelineTuningOptions(speed_level=3)
    if finline:
        options.inlining_threshold = 1  # as lleaves does: any threshold turns the inliner on
    builder = llvm.create_pass_builder(target_machine, options)
    builder.getModulePassManager().run(module, builder)
    if os.environ.get("LLEAVES_PRINT_OPTIMIZED_IR") == "1":
        print(module)
    return module


def patch_lleaves() -> bool:
    """Make ``lleaves.Model.compile`` work on this llvmlite; returns whether a patch was needed."""
    if not lleaves_needs_patch():
        return False
    import lleaves.compiler
    import lleaves.compiler.tree_compiler
    import lleaves.lleaves
    import lleaves.llvm_binding

    lleaves.compiler.tree_compiler.compile_to_module = _compile_to_module
    lleaves.compiler.compile_to_module = _compile_to_module
    lleaves.llvm_binding._initialize_llvm = _initialize_llvm
    return True
