"""--por: which alphabet operations are independent (docs/check.md argues each rule)."""


def relation(arch, rows, d, symmetric):
    n = len(rows)
    return tuple(range(n)), bytes(n * n)
