"""Public op functions: validation, impl choice, and the fake/autograd registrations of the compiled ops."""
