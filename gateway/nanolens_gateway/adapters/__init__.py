"""One adapter per domain: decode the input into the domain service's request, call it,
summarise the answer and draw its pictures. Each adapter module defines ``DOMAIN``
(:class:`nanolens_gateway.domains.Domain`) and is registered in
:data:`nanolens_gateway.domains.DOMAIN_MODULES`. An adapter's code, with the shared adapter
and format modules it imports, is part of the identity of its results."""
