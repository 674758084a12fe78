fn main() {
    for a in infergate::assets::ALL {
        match infergate::assets::ensure(&a) {
            Ok(p) => println!("{}: {}", a.name, p.display()),
            Err(e) => println!("ERR {e}"),
        }
    }
}
