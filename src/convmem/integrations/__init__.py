"""convmem under the tools people already run. Each integration is an optional extra
and is imported only by whoever uses it: importing ``convmem`` imports none of them."""
