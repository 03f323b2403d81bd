//! Container init for tests and tools: `Container::create` starts this binary as the
//! init process of a container.

fn main() {
    rustjail::init_main()
}
